package dev.parity.tls;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.security.spec.PKCS8EncodedKeySpec;
import java.util.ArrayList;
import java.util.Base64;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * TLS contexts from PEM files, the form the Python clients take the same settings in.
 *
 * <p>Java's own stores want JKS or PKCS#12 files; parity's settings name PEM files (a CA, a
 * client certificate and its PKCS#8 key, or both in one file), so they are read here into
 * in-memory stores. Errors name the setting to fix through the caller's variable prefix
 * ({@code PARITY_REDIS_TLS_}, {@code PARITY_REGISTRY_}).
 */
public final class PemTls {

    private static final Pattern BLOCK = Pattern.compile(
        "-----BEGIN ([A-Z0-9 ]+)-----([A-Za-z0-9+/=\\s]+)-----END \\1-----");
    private static final char[] NO_PASSWORD = new char[0];

    private PemTls() { }

    /** The PEM blocks of one file: (label, DER bytes). */
    record Block(String label, byte[] der) { }

    /**
     * An SSL context trusting {@code caFile} (the system's CAs when null) and, when
     * {@code certFile} is given, presenting that certificate with the key of {@code keyFile}
     * (or the key inside {@code certFile} when {@code keyFile} is null).
     *
     * @param prefix the settings' variable prefix, e.g. {@code PARITY_REGISTRY_}; messages append
     *     {@code CA_FILE}, {@code CERT_FILE} or {@code KEY_FILE} to it
     * @throws IllegalArgumentException a file cannot be read or holds no usable PEM; the message
     *     names the setting
     */
    public static SSLContext context(String caFile, String certFile, String keyFile, String prefix) {
        try {
            TrustManagerFactory trust = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
            if (caFile == null) {
                trust.init((KeyStore) null);
            } else {
                KeyStore cas = emptyStore();
                int i = 0;
                for (Certificate ca : certificates(caFile, prefix + "CA_FILE")) {
                    cas.setCertificateEntry("ca-" + i++, ca);
                }
                trust.init(cas);
            }
            KeyManagerFactory keys = null;
            if (certFile != null) {
                List<Certificate> chain = certificates(certFile, prefix + "CERT_FILE");
                String keySetting = prefix + (keyFile == null ? "CERT_FILE" : "KEY_FILE");
                PrivateKey key = privateKey(keyFile == null ? certFile : keyFile, keySetting);
                KeyStore store = emptyStore();
                store.setKeyEntry("client", key, NO_PASSWORD, chain.toArray(new Certificate[0]));
                keys = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
                keys.init(store, NO_PASSWORD);
            } else if (keyFile != null) {
                throw new IllegalArgumentException(prefix + "KEY_FILE needs " + prefix + "CERT_FILE");
            }
            SSLContext context = SSLContext.getInstance("TLS");
            context.init(keys == null ? null : keys.getKeyManagers(), trust.getTrustManagers(), null);
            return context;
        } catch (GeneralSecurityException | IOException e) {
            throw new IllegalArgumentException("cannot set up TLS from " + prefix + "* files: " + e.getMessage(), e);
        }
    }

    static List<Block> blocks(String file, String setting) {
        String text;
        try {
            text = Files.readString(Path.of(file), StandardCharsets.US_ASCII);
        } catch (IOException e) {
            throw new IllegalArgumentException(setting + ": cannot read " + file + ": " + e.getMessage(), e);
        }
        List<Block> found = new ArrayList<>();
        Matcher m = BLOCK.matcher(text);
        while (m.find()) {
            found.add(new Block(m.group(1), Base64.getMimeDecoder().decode(m.group(2))));
        }
        return found;
    }

    static List<Certificate> certificates(String file, String setting) throws GeneralSecurityException {
        CertificateFactory x509 = CertificateFactory.getInstance("X.509");
        List<Certificate> certs = new ArrayList<>();
        for (Block block : blocks(file, setting)) {
            if (block.label().equals("CERTIFICATE")) {
                certs.add(x509.generateCertificate(new ByteArrayInputStream(block.der())));
            }
        }
        if (certs.isEmpty()) {
            throw new IllegalArgumentException(setting + ": " + file + " holds no PEM certificate");
        }
        return certs;
    }

    static PrivateKey privateKey(String file, String setting) {
        for (Block block : blocks(file, setting)) {
            switch (block.label()) {
                case "PRIVATE KEY" -> {
                    return pkcs8(block.der(), file, setting);
                }
                case "EC PRIVATE KEY", "RSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY" -> throw new IllegalArgumentException(
                    setting + ": the key in " + file + " is a " + block.label() + "; the JVM reads unencrypted "
                        + "PKCS#8 keys: openssl pkcs8 -topk8 -nocrypt -in " + file + " -out <new file>");
                default -> { }
            }
        }
        throw new IllegalArgumentException(setting + ": " + file + " holds no PEM private key");
    }

    private static PrivateKey pkcs8(byte[] der, String file, String setting) {
        for (String algorithm : new String[] {"EC", "RSA", "Ed25519", "EdDSA"}) {
            try {
                return KeyFactory.getInstance(algorithm).generatePrivate(new PKCS8EncodedKeySpec(der));
            } catch (GeneralSecurityException e) {
                // Not this algorithm (or not available here): try the next one.
            }
        }
        throw new IllegalArgumentException(setting + ": the key in " + file + " is not an EC, RSA or Ed25519 key");
    }

    private static KeyStore emptyStore() throws GeneralSecurityException, IOException {
        KeyStore store = KeyStore.getInstance("PKCS12");
        store.load(null, null);
        return store;
    }
}
