package dev.parity.avro;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

import dev.parity.tls.PemTls;

import javax.net.ssl.SSLHandshakeException;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Writer schemas by id, fetched from a Confluent-compatible registry ({@code GET /schemas/ids/{id}}).
 *
 * <p>A fetched schema is kept for the life of the JVM and shared by every decoder of that registry:
 * schema ids are immutable, so while the registry is down every id seen before keeps decoding.
 *
 * <p>Failures never block for long:
 * <ol>
 *   <li>each request has a short connect and response timeout;</li>
 *   <li>after a failed request (no answer, 5xx) no request is made for {@code backoff}, and every
 *       unknown id in that time is answered {@link Lookup.Status#UNAVAILABLE} at once;</li>
 *   <li>an id the registry does not know (404) is remembered as unknown for {@code backoff}, so a
 *       burst of records with a bogus id costs one request.</li>
 * </ol>
 *
 * <p>A secured registry ({@link RegistryAccess}: https with a CA file, a basic-auth login, a client
 * certificate) is reached the same way; a refused login (401, 403) or an untrusted certificate is a
 * failed request whose detail names the setting to fix. {@link #refusal} asks once, at planning, so
 * that such a job fails to start instead of dead-lettering every record.
 */
final class SchemaRegistryCache {

    /** The answer for one id. */
    record Lookup(Status status, String schema, String detail) {
        enum Status { FOUND, UNKNOWN, UNAVAILABLE }
    }

    private static final Map<RegistryAccess, SchemaRegistryCache> BY_ACCESS = new ConcurrentHashMap<>();
    private static final ObjectMapper JSON = new ObjectMapper();

    private final RegistryAccess access;
    private final String baseUrl;
    private final Duration timeout;
    private final long backoffMillis;
    private final HttpClient http;
    private final Map<Integer, String> schemas = new ConcurrentHashMap<>();
    private final Map<Integer, Long> unknownUntil = new ConcurrentHashMap<>();
    private volatile long unavailableUntil;
    private volatile String lastFailure = "";

    private SchemaRegistryCache(RegistryAccess access) {
        String url = access.url();
        this.access = access;
        this.baseUrl = url.endsWith("/") ? url.substring(0, url.length() - 1) : url;
        this.timeout = access.timeout();
        this.backoffMillis = access.backoff().toMillis();
        HttpClient.Builder builder = HttpClient.newBuilder().connectTimeout(timeout);
        if (access.secured()) {
            builder.sslContext(PemTls.context(access.caFile(), access.certFile(), access.keyFile(),
                RegistryAccess.PREFIX));
        }
        this.http = builder.build();
    }

    /** The shared cache of one registry reached one way (the settings of the first caller win). */
    static SchemaRegistryCache forAccess(RegistryAccess access) {
        return BY_ACCESS.computeIfAbsent(access, SchemaRegistryCache::new);
    }

    /**
     * Why this registry refuses us, asked once with {@code GET /subjects}: a refused login or an
     * untrusted certificate, with the setting to fix; null when it answers, or when it does not
     * answer at all (a registry that is down is not a wrong setting: ids seen before still decode).
     */
    String refusal() {
        try {
            HttpResponse<Void> response = http.send(request("/subjects"), HttpResponse.BodyHandlers.discarding());
            int status = response.statusCode();
            return status == 401 || status == 403 ? access.refusedLogin(status) : null;
        } catch (SSLHandshakeException e) {
            return untrusted(e);
        } catch (IOException e) {
            return null;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return null;
        }
    }

    private HttpRequest request(String path) {
        HttpRequest.Builder request = HttpRequest.newBuilder(URI.create(baseUrl + path))
            .timeout(timeout)
            .header("Accept", "application/vnd.schemaregistry.v1+json, application/json")
            .GET();
        String authorization = access.authorization();
        if (authorization != null) {
            request.header("Authorization", authorization);
        }
        return request.build();
    }

    private String untrusted(SSLHandshakeException e) {
        return "the TLS handshake with the schema registry at " + baseUrl + " failed (" + e.getMessage()
            + "); check " + RegistryAccess.PREFIX + "CA_FILE";
    }

    Lookup lookup(int id) {
        String cached = schemas.get(id);
        if (cached != null) {
            return new Lookup(Lookup.Status.FOUND, cached, "");
        }
        long now = System.currentTimeMillis();
        Long unknown = unknownUntil.get(id);
        if (unknown != null && unknown > now) {
            return new Lookup(Lookup.Status.UNKNOWN, null, "schema id " + id + " is not in the registry");
        }
        if (unavailableUntil > now) {
            return new Lookup(Lookup.Status.UNAVAILABLE, null,
                "schema id " + id + " is not cached and the registry is unavailable: " + lastFailure);
        }
        return fetch(id);
    }

    private synchronized Lookup fetch(int id) {
        String cached = schemas.get(id);
        if (cached != null) {
            return new Lookup(Lookup.Status.FOUND, cached, "");
        }
        HttpResponse<String> response;
        try {
            response = http.send(request("/schemas/ids/" + id), HttpResponse.BodyHandlers.ofString());
        } catch (SSLHandshakeException e) {
            return unavailable(id, untrusted(e));
        } catch (IOException e) {
            return unavailable(id, e.getClass().getSimpleName() + ": " + e.getMessage());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return unavailable(id, "interrupted");
        }
        int status = response.statusCode();
        if (status == 404) {
            unknownUntil.put(id, System.currentTimeMillis() + backoffMillis);
            return new Lookup(Lookup.Status.UNKNOWN, null, "schema id " + id + " is not in the registry (404)");
        }
        if (status == 401 || status == 403) {
            return unavailable(id, access.refusedLogin(status));
        }
        if (status != 200) {
            return unavailable(id, "HTTP " + status + " from " + baseUrl);
        }
        try {
            JsonNode body = JSON.readTree(response.body());
            JsonNode type = body.get("schemaType");
            if (type != null && !"AVRO".equalsIgnoreCase(type.asText())) {
                unknownUntil.put(id, System.currentTimeMillis() + backoffMillis);
                return new Lookup(Lookup.Status.UNKNOWN, null,
                    "schema id " + id + " is a " + type.asText() + " schema, not Avro");
            }
            JsonNode schema = body.get("schema");
            if (schema == null || !schema.isTextual()) {
                return unavailable(id, "the registry's answer for id " + id + " has no schema");
            }
            schemas.put(id, schema.asText());
            return new Lookup(Lookup.Status.FOUND, schema.asText(), "");
        } catch (IOException e) {
            return unavailable(id, "unreadable answer for id " + id + ": " + e.getMessage());
        }
    }

    private Lookup unavailable(int id, String why) {
        lastFailure = why;
        unavailableUntil = System.currentTimeMillis() + backoffMillis;
        return new Lookup(Lookup.Status.UNAVAILABLE, null,
            "schema id " + id + " is not cached and the registry did not answer: " + why);
    }
}
