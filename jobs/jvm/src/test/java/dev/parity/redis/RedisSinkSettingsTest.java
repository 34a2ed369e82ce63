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
import java.util.List;

import org.apache.flink.metrics.SimpleCounter;
import org.junit.jupiter.api.io.TempDir;
import redis.clients.jedis.HostAndPort;

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

    /** Late-event options of a view whose keys carry its hash tag, in cluster mode. */
    private static Configuration lateInCluster(String nodes) {
        Configuration options = new Configuration();
        options.setString("kind", "late");
        options.setString("view", "user_stats_v2");
        options.setString("key.epoch", "parity:{user_stats:v2}:epoch");
        options.setString("key.late-events", "parity:{user_stats:v2}:late_events");
        options.setString("key.late-counted", "parity:{user_stats:v2}:late_counted");
        options.setString("redis.mode", "cluster");
        if (nodes != null) {
            options.setString("redis.cluster.nodes", nodes);
        }
        return options;
    }

    /** The message the options are refused with: a ValidationException, as Flink reports it. */
    private static String refusal(Configuration options) {
        return assertThrows(ValidationException.class, () -> new RedisSinkSettings(options)).getMessage();
    }

    @Test
    void theModeIsSingleByDefault() {
        RedisSinkSettings settings = new RedisSinkSettings(late());
        assertEquals(RedisSinkSettings.Mode.SINGLE, settings.mode);
        assertEquals(List.of(), settings.clusterNodes);
    }

    @Test
    void anUnknownModeIsRefusedNamingItAndTheModes() {
        Configuration options = late();
        options.setString("redis.mode", "sentinel");
        String error = refusal(options);
        assertTrue(error.contains("'redis.mode' is 'sentinel'"), error);
        assertTrue(error.contains("use single or cluster"), error);
    }

    @Test
    void singleModeIgnoresTheClusterNodes() {
        Configuration options = late();
        options.setString("redis.mode", "single");
        options.setString("redis.cluster.nodes", "not a node list");
        RedisSinkSettings settings = new RedisSinkSettings(options);
        assertEquals(RedisSinkSettings.Mode.SINGLE, settings.mode);
        assertEquals(List.of(), settings.clusterNodes);
    }

    @Test
    void clusterModeNeedsNodes() {
        for (String nodes : new String[] {null, "", " , "}) {
            String error = refusal(lateInCluster(nodes));
            assertTrue(error.contains("'redis.cluster.nodes'"), error);
            assertTrue(error.contains("set PARITY_REDIS_CLUSTER_NODES"), error);
        }
    }

    @Test
    void clusterNodesAreReadInOrder() {
        RedisSinkSettings settings = new RedisSinkSettings(
            lateInCluster(" redis-1:7000, 10.0.0.2:7001,[::1]:7002,"));
        assertEquals(RedisSinkSettings.Mode.CLUSTER, settings.mode);
        assertEquals(List.of(new HostAndPort("redis-1", 7000), new HostAndPort("10.0.0.2", 7001),
            new HostAndPort("::1", 7002)), settings.clusterNodes);
    }

    @Test
    void theModeIgnoresCase() {
        Configuration options = lateInCluster("redis-1:7000");
        options.setString("redis.mode", "Cluster");
        assertEquals(RedisSinkSettings.Mode.CLUSTER, new RedisSinkSettings(options).mode);
    }

    @Test
    void aNodeThatIsNotHostAndPortIsRefusedNamingIt() {
        for (String bad : new String[] {"redis-1", "redis-1:", ":7000", "redis-1:port", "redis-1:0", "redis-1:65536",
            "redis-1:-1", "[]:7000"}) {
            String error = refusal(lateInCluster("redis-0:7000," + bad));
            assertTrue(error.contains("'redis.cluster.nodes' has '" + bad + "', not host:port"),
                error);
            assertTrue(error.contains("PARITY_REDIS_CLUSTER_NODES"), error);
        }
    }

    @Test
    void clusterModeRefusesADatabaseOtherThanZero() {
        Configuration options = lateInCluster("redis-1:7000");
        options.setString("redis.db", "2");
        String error = refusal(options);
        assertTrue(error.contains("PARITY_REDIS_DB"), error);
        options.setString("redis.db", "0");
        new RedisSinkSettings(options);
    }

    @Test
    void clusterModeNeedsEveryKeyToCarryTheViewsHashTag() {
        Configuration untagged = lateInCluster("redis-1:7000");
        untagged.setString("key.late-counted", "parity:user_stats:v2:late_counted");
        String error = refusal(untagged);
        assertTrue(error.contains("'key.late-counted'"), error);
        assertTrue(error.contains("hash tag"), error);

        Configuration mixed = lateInCluster("redis-1:7000");
        mixed.setString("key.late-events", "parity:{user_stats:v1}:late_events");
        error = refusal(mixed);
        assertTrue(error.contains("'key.epoch' has {user_stats:v2} but 'key.late-events' has "
            + "{user_stats:v1}"), error);

        // Single mode keeps any layout.
        untagged.setString("redis.mode", "single");
        new RedisSinkSettings(untagged);
    }

    @Test
    void aKeyHeadMustHoldTheWholeTag() {
        Configuration options = tilesInCluster();
        options.setString("key.tiles", "parity:{user_stats:v2:e:");
        String error = refusal(options);
        assertTrue(error.contains("'key.tiles'"), error);
    }

    @Test
    void theRoutingKeyIsOneOfTheWritersKeys() {
        assertEquals("parity:{user_stats:v2}:late_events",
            new RedisSinkSettings(lateInCluster("redis-1:7000")).routingKey());
        RedisSinkSettings tiles = new RedisSinkSettings(tilesInCluster());
        assertEquals("parity:{user_stats:v2}:due", tiles.routingKey());
        Configuration completeness = tilesInCluster();
        completeness.setString("kind", "completeness");
        completeness.setString("key.completeness", "parity:{user_stats:v2}:completeness");
        assertEquals("parity:{user_stats:v2}:completeness", new RedisSinkSettings(completeness).routingKey());
    }

    private static Configuration tilesInCluster() {
        Configuration options = new Configuration();
        options.setString("kind", "tiles");
        options.setString("view", "user_stats_v2");
        options.setString("redis.mode", "cluster");
        options.setString("redis.cluster.nodes", "redis-1:7000");
        options.setString("key.epoch", "parity:{user_stats:v2}:epoch");
        options.setString("key.tiles", "parity:{user_stats:v2}:e:");
        options.setString("key.windows", "parity:{user_stats:v2}:w:");
        options.setString("key.due", "parity:{user_stats:v2}:due");
        options.setString("layout", "1,count,3600");
        options.setString("tile-ms", "60000");
        options.setString("horizon-ms", "86400000");
        return options;
    }

    @Test
    void tlsFilesWithoutTlsAreRefusedNamingTheSetting() {
        Configuration options = late();
        options.setString("redis.tls.ca-file", "/tmp/ca.pem");
        String error = refusal(options);
        assertTrue(error.endsWith("set PARITY_REDIS_TLS=true"), error);
    }

    @Test
    void aKeyWithoutItsCertificateIsRefused() {
        Configuration options = late();
        options.setString("redis.tls", "true");
        options.setString("redis.tls.key-file", "/tmp/client.key");
        String error = refusal(options);
        assertTrue(error.contains("PARITY_REDIS_TLS_CERT_FILE"), error);
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
