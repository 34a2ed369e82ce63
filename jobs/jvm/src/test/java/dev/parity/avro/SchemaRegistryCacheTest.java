package dev.parity.avro;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpsConfigurator;
import com.sun.net.httpserver.HttpsServer;
import dev.parity.tls.PemTls;
import dev.parity.tls.TestCerts;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Base64;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The registry client against a stand-in https registry that wants a basic-auth login. */
class SchemaRegistryCacheTest {

    private static final String PASSWORD = "s3cret-registry";
    private static final String SCHEMA = "{\"type\":\"record\",\"name\":\"E\",\"fields\":[]}";

    @TempDir
    static Path folder;
    static TestCerts certs;
    static HttpsServer server;
    static String url;

    @BeforeAll
    static void start() throws Exception {
        certs = TestCerts.make(folder);
        server = HttpsServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
        server.setHttpsConfigurator(new HttpsConfigurator(
            PemTls.context(null, certs.server().toString(), certs.serverKey().toString(), "TEST_")));
        String expected = "Basic " + Base64.getEncoder()
            .encodeToString(("parity:" + PASSWORD).getBytes(StandardCharsets.UTF_8));
        server.createContext("/", exchange -> {
            if (!expected.equals(exchange.getRequestHeaders().getFirst("Authorization"))) {
                answer(exchange, 401, "{\"message\":\"login\"}");
            } else if (exchange.getRequestURI().getPath().equals("/schemas/ids/1")) {
                answer(exchange, 200, "{\"schema\":" + quoted(SCHEMA) + "}");
            } else {
                answer(exchange, 200, "[]");
            }
        });
        server.start();
        url = "https://127.0.0.1:" + server.getAddress().getPort();
    }

    @AfterAll
    static void stop() {
        server.stop(0);
    }

    private static void answer(HttpExchange exchange, int status, String body) throws IOException {
        byte[] bytes = body.getBytes(StandardCharsets.UTF_8);
        exchange.sendResponseHeaders(status, bytes.length);
        try (OutputStream out = exchange.getResponseBody()) {
            out.write(bytes);
        }
    }

    private static String quoted(String text) {
        return "\"" + text.replace("\"", "\\\"") + "\"";
    }

    private static RegistryAccess access(String userInfo, Path ca) {
        return new RegistryAccess(url, Duration.ofSeconds(2), Duration.ofMillis(1), userInfo, ca.toString(), null, null);
    }

    @Test
    void theRightLoginOverTrustedTlsFetchesTheSchema() {
        SchemaRegistryCache cache = SchemaRegistryCache.forAccess(access("parity:" + PASSWORD, certs.ca()));
        assertNull(cache.refusal());
        SchemaRegistryCache.Lookup found = cache.lookup(1);
        assertEquals(SchemaRegistryCache.Lookup.Status.FOUND, found.status(), found.detail());
        assertEquals(SCHEMA, found.schema());
    }

    @Test
    void aWrongPasswordNamesTheSettingAndNeverShowsThePassword() {
        RegistryAccess wrong = access("parity:not-the-password", certs.ca());
        SchemaRegistryCache cache = SchemaRegistryCache.forAccess(wrong);
        String refusal = cache.refusal();
        assertEquals("the schema registry at " + url + " refused the login of user 'parity' (HTTP 401); check "
            + "PARITY_REGISTRY_BASIC_AUTH_USER_INFO", refusal);
        SchemaRegistryCache.Lookup lookup = cache.lookup(1);
        assertEquals(SchemaRegistryCache.Lookup.Status.UNAVAILABLE, lookup.status());
        assertTrue(lookup.detail().contains("PARITY_REGISTRY_BASIC_AUTH_USER_INFO"), lookup.detail());
        for (String text : new String[] {refusal, lookup.detail(), wrong.toString()}) {
            assertFalse(text.contains("not-the-password"), text);
        }
    }

    @Test
    void noLoginIsToldToSetOne() {
        String refusal = SchemaRegistryCache.forAccess(access(null, certs.ca())).refusal();
        assertTrue(refusal.endsWith("it wants a login; set PARITY_REGISTRY_BASIC_AUTH_USER_INFO=<user>:<password>"),
            refusal);
    }

    @Test
    void aCertificateFromAnotherCaNamesTheCaSetting() {
        SchemaRegistryCache cache = SchemaRegistryCache.forAccess(access("parity:" + PASSWORD, certs.otherCa()));
        String refusal = cache.refusal();
        assertTrue(refusal.startsWith("the TLS handshake with the schema registry at " + url + " failed"), refusal);
        assertTrue(refusal.endsWith("check PARITY_REGISTRY_CA_FILE"), refusal);
        assertTrue(cache.lookup(1).detail().contains("PARITY_REGISTRY_CA_FILE"));
    }
}
