package dev.parity.redis;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.table.api.ValidationException;
import org.junit.jupiter.api.Test;

import java.io.IOException;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

import org.apache.flink.metrics.SimpleCounter;
import org.junit.jupiter.api.io.TempDir;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class RedisSinkSettingsTest {

    private static Configuration late() {
        Configuration options = new Configuration();
        options.setString("kind", "late");
        options.setString("view", "user_stats_v1");
        options.setString("key.epoch", "p:epoch");
        options.setString("key.late-events", "p:late");
        options.setString("key.late-counted", "p:counted");
        return options;
    }

    @Test
    void tlsFilesWithoutTlsAreRefusedNamingTheSetting() {
        Configuration options = late();
        options.setString("redis.tls.ca-file", "/tmp/ca.pem");
        ValidationException error = assertThrows(ValidationException.class, () -> new RedisSinkSettings(options));
        assertTrue(error.getMessage().endsWith("set PARITY_REDIS_TLS=true"), error.getMessage());
    }

    @Test
    void aKeyWithoutItsCertificateIsRefused() {
        Configuration options = late();
        options.setString("redis.tls", "true");
        options.setString("redis.tls.key-file", "/tmp/client.key");
        ValidationException error = assertThrows(ValidationException.class, () -> new RedisSinkSettings(options));
        assertTrue(error.getMessage().contains("PARITY_REDIS_TLS_CERT_FILE"), error.getMessage());
    }

    @Test
    void tlsSettingsAreRead() {
        Configuration options = late();
        options.setString("redis.tls", "true");
        options.setString("redis.tls.ca-file", "/etc/ca.pem");
        RedisSinkSettings settings = new RedisSinkSettings(options);
        assertTrue(settings.tls);
        assertEquals("/etc/ca.pem", settings.tlsCaFile);
    }

    /**
     * A server that does not speak TLS fails the handshake: the error names the CA setting at once,
     * with no retries (a handshake refused now is refused again).
     */
    @Test
    void aFailedHandshakeIsNotRetriedAndNamesTheCaSetting(@TempDir Path folder) throws Exception {
        Path ca = folder.resolve("ca.pem");
        dev.parity.tls.TestCerts certs = dev.parity.tls.TestCerts.make(folder);
        Files.copy(certs.otherCa(), ca, java.nio.file.StandardCopyOption.REPLACE_EXISTING);
        try (ServerSocket plain = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            Thread answer = new Thread(() -> {
                try (Socket socket = plain.accept()) {
                    socket.getOutputStream().write("-ERR not tls\r\n".getBytes(StandardCharsets.US_ASCII));
                } catch (IOException ignored) {
                    // The client hung up first.
                }
            });
            answer.start();
            Configuration options = late();
            options.setString("redis.port", String.valueOf(plain.getLocalPort()));
            options.setString("redis.tls", "true");
            options.setString("redis.tls.ca-file", ca.toString());
            options.setString("redis.write-retry", "30 s");
            SimpleCounter retries = new SimpleCounter();
            long began = System.currentTimeMillis();
            try (RedisClient client = new RedisClient(new RedisSinkSettings(options), retries, new SimpleCounter())) {
                IOException error = assertThrows(IOException.class, () -> client.call("a test write", (j, s) -> j.ping()));
                assertTrue(error.getMessage().contains("the TLS handshake with Redis at 127.0.0.1:"), error.getMessage());
                assertTrue(error.getMessage().contains("check PARITY_REDIS_TLS_CA_FILE"), error.getMessage());
            }
            assertEquals(0, retries.getCount());
            assertTrue(System.currentTimeMillis() - began < 5000);
            answer.join(5000);
        }
    }
}
