package dev.parity.avro;

import java.io.Serializable;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Base64;

/**
 * How to reach the schema registry: its URL, the request timeout and back-off, and for a secured
 * registry the basic-auth login ({@code user:password}) and PEM files of the TLS settings. Shipped
 * to the task managers with the decoder; {@link #toString} never shows the password.
 */
record RegistryAccess(
        String url,
        Duration timeout,
        Duration backoff,
        String userInfo,
        String caFile,
        String certFile,
        String keyFile) implements Serializable {

    /** The variables these settings come from, named in messages. */
    static final String PREFIX = "PARITY_REGISTRY_";
    static final String USER_INFO_SETTING = PREFIX + "BASIC_AUTH_USER_INFO";

    RegistryAccess {
        if (userInfo != null && userInfo.indexOf(':') <= 0) {
            // The value itself is the secret: name the setting, never show it.
            throw new IllegalArgumentException(USER_INFO_SETTING + " must be <user>:<password>");
        }
    }

    /** A plain registry: no login, the system's CAs for an https URL. */
    static RegistryAccess plain(String url, Duration timeout, Duration backoff) {
        return new RegistryAccess(url, timeout, backoff, null, null, null, null);
    }

    /** The login's user, for messages; null without one. */
    String user() {
        return userInfo == null ? null : userInfo.substring(0, userInfo.indexOf(':'));
    }

    /** The Authorization header's value, or null without a login. */
    String authorization() {
        if (userInfo == null) {
            return null;
        }
        return "Basic " + Base64.getEncoder().encodeToString(userInfo.getBytes(StandardCharsets.UTF_8));
    }

    boolean secured() {
        return userInfo != null || caFile != null || certFile != null;
    }

    /** Why the registry refused the login, and what to check. */
    String refusedLogin(int status) {
        if (userInfo == null) {
            return "the schema registry at " + url + " answered HTTP " + status + ": it wants a login; set "
                + USER_INFO_SETTING + "=<user>:<password>";
        }
        return "the schema registry at " + url + " refused the login of user '" + user() + "' (HTTP " + status
            + "); check " + USER_INFO_SETTING;
    }

    @Override
    public String toString() {
        return "RegistryAccess[url=" + url + ", user=" + user() + ", caFile=" + caFile + ", certFile=" + certFile
            + ", keyFile=" + keyFile + "]";
    }
}
