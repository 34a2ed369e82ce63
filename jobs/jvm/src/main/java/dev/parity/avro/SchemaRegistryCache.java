package dev.parity.avro;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

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
 */
final class SchemaRegistryCache {

    /** The answer for one id. */
    record Lookup(Status status, String schema, String detail) {
        enum Status { FOUND, UNKNOWN, UNAVAILABLE }
    }

    private static final Map<String, SchemaRegistryCache> BY_URL = new ConcurrentHashMap<>();
    private static final ObjectMapper JSON = new ObjectMapper();

    private final String baseUrl;
    private final Duration timeout;
    private final long backoffMillis;
    private final HttpClient http;
    private final Map<Integer, String> schemas = new ConcurrentHashMap<>();
    private final Map<Integer, Long> unknownUntil = new ConcurrentHashMap<>();
    private volatile long unavailableUntil;
    private volatile String lastFailure = "";

    private SchemaRegistryCache(String baseUrl, Duration timeout, Duration backoff) {
        this.baseUrl = baseUrl.endsWith("/") ? baseUrl.substring(0, baseUrl.length() - 1) : baseUrl;
        this.timeout = timeout;
        this.backoffMillis = backoff.toMillis();
        this.http = HttpClient.newBuilder().connectTimeout(timeout).build();
    }

    /** The shared cache of one registry (settings of the first caller win). */
    static SchemaRegistryCache forUrl(String url, Duration timeout, Duration backoff) {
        return BY_URL.computeIfAbsent(url, u -> new SchemaRegistryCache(u, timeout, backoff));
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
        HttpRequest request = HttpRequest.newBuilder(URI.create(baseUrl + "/schemas/ids/" + id))
            .timeout(timeout)
            .header("Accept", "application/vnd.schemaregistry.v1+json, application/json")
            .GET()
            .build();
        HttpResponse<String> response;
        try {
            response = http.send(request, HttpResponse.BodyHandlers.ofString());
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
