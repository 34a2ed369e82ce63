package dev.parity.redis;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.metrics.SimpleCounter;
import org.junit.jupiter.api.Test;
import redis.clients.jedis.Pipeline;
import redis.clients.jedis.Response;

import java.io.IOException;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** The client's cluster routing and retries, against fake cluster nodes on loopback ports. */
class RedisClientClusterTest {

    private static final String EPOCH = "parity:{user_stats:v2}:epoch";

    private final SimpleCounter retries = new SimpleCounter();
    private final SimpleCounter errors = new SimpleCounter();

    /** Options of the late-event writer of user_stats v2, retrying for {@code budget}. */
    static Configuration late(String budget) {
        Configuration options = new Configuration();
        options.setString("kind", "late");
        options.setString("view", "user_stats_v2");
        options.setString("key.epoch", EPOCH);
        options.setString("key.late-events", "parity:{user_stats:v2}:late_events");
        options.setString("key.late-counted", "parity:{user_stats:v2}:late_counted");
        options.setString("redis.write-retry", budget);
        return options;
    }

    private static RedisSinkSettings cluster(String nodes, String budget) {
        Configuration options = late(budget);
        options.setString("redis.mode", "cluster");
        options.setString("redis.cluster.nodes", nodes);
        return new RedisSinkSettings(options);
    }

    private RedisClient client(RedisSinkSettings settings) {
        return new RedisClient(settings, retries, errors, "count_late");
    }

    private static String read(RedisClient client) throws IOException {
        return client.call("a test read", (jedis, shas) -> jedis.get(EPOCH) + "/" + shas.get("count_late"));
    }

    @Test
    void writesGoToTheMasterTheSeedNamesWithTheScriptsLoadedThere() throws Exception {
        try (FakeClusterNode seed = new FakeClusterNode(); FakeClusterNode master = new FakeClusterNode()) {
            seed.masterPort = master.port();
            try (RedisClient client = client(cluster(seed.address(), "30 s"))) {
                assertEquals("ok/" + FakeClusterNode.DIGEST, read(client));
                assertEquals("ok/" + FakeClusterNode.DIGEST, read(client));
            }
            assertEquals(1, seed.slotsAsked.get());
            assertEquals(0, seed.gets.get());
            assertEquals(2, master.gets.get());
            assertEquals(0, retries.getCount());
            // The seed's connection was closed once it had answered.
            waitFor(() -> seed.open.get() == 0);
        }
    }

    @Test
    void seedsAreAskedInTurnUntilOneAnswers() throws Exception {
        try (FakeClusterNode node = new FakeClusterNode()) {
            String nodes = "127.0.0.1:" + FakeClusterNode.deadPort() + "," + node.address();
            try (RedisClient client = client(cluster(nodes, "30 s"))) {
                assertEquals("ok/" + FakeClusterNode.DIGEST, read(client));
            }
            assertEquals(0, retries.getCount());
        }
    }

    @Test
    void aRedirectionIsRetriedAndTheOwnerLookedUpAgain() throws Exception {
        try (FakeClusterNode node = new FakeClusterNode()) {
            node.getErrors.add("MOVED 1234 127.0.0.1:" + node.port());
            node.getErrors.add("ASK 1234 127.0.0.1:" + node.port());
            node.getErrors.add("CLUSTERDOWN The cluster is down");
            node.getErrors.add("TRYAGAIN Multiple keys request during rehashing of slot");
            try (RedisClient client = client(cluster(node.address(), "30 s"))) {
                assertEquals("ok/" + FakeClusterNode.DIGEST, read(client));
            }
            assertEquals(4, retries.getCount());
            assertEquals(0, errors.getCount());
            assertEquals(5, node.slotsAsked.get());
        }
    }

    /** The tile writer pipelines its script calls: a redirection in a pipeline's replies is retried too. */
    @Test
    void aRedirectionInAPipelineIsRetried() throws Exception {
        try (FakeClusterNode node = new FakeClusterNode()) {
            node.getErrors.add("MOVED 1234 127.0.0.1:" + node.port());
            try (RedisClient client = client(cluster(node.address(), "30 s"))) {
                String value = client.call("a pipelined read", (jedis, shas) -> {
                    Pipeline pipe = jedis.pipelined();
                    Response<String> first = pipe.get(EPOCH);
                    Response<String> second = pipe.get(EPOCH);
                    pipe.sync();
                    return first.get() + second.get();
                });
                assertEquals("okok", value);
            }
            assertEquals(1, retries.getCount());
            assertEquals(2, node.slotsAsked.get());
        }
    }

    @Test
    void redirectionsOutlastingTheBudgetFailTheWrite() throws Exception {
        try (FakeClusterNode node = new FakeClusterNode()) {
            for (int i = 0; i < 100; i++) {
                node.getErrors.add("MOVED 1234 127.0.0.1:" + node.port());
            }
            long began = System.currentTimeMillis();
            try (RedisClient client = client(cluster(node.address(), "300 ms"))) {
                IOException error = assertThrows(IOException.class, () -> read(client));
                assertTrue(error.getMessage().startsWith("a test read: Redis at 127.0.0.1:" + node.port()
                    + " (cluster seeds " + node.address() + "): MOVED 1234"), error.getMessage());
            }
            assertTrue(System.currentTimeMillis() - began < 5000);
            assertTrue(retries.getCount() >= 1, "retries: " + retries.getCount());
            assertEquals(1, errors.getCount());
        }
    }

    @Test
    void seedsNoneOfWhichAnswersAreRetriedThenNamed() throws Exception {
        String nodes = "127.0.0.1:" + FakeClusterNode.deadPort() + ",127.0.0.1:" + FakeClusterNode.deadPort();
        try (RedisClient client = client(cluster(nodes, "300 ms"))) {
            IOException error = assertThrows(IOException.class, () -> read(client));
            assertTrue(error.getMessage().startsWith("a test read: no seed of the Redis Cluster answered "
                + "(PARITY_REDIS_CLUSTER_NODES=" + nodes + ")"), error.getMessage());
        }
        assertTrue(retries.getCount() >= 1, "retries: " + retries.getCount());
        assertEquals(1, errors.getCount());
    }

    @Test
    void aSeedThatIsNoClusterNodeFailsAtOnce() throws Exception {
        try (FakeClusterNode node = new FakeClusterNode()) {
            node.clusterEnabled = false;
            try (RedisClient client = client(cluster(node.address(), "30 s"))) {
                IOException error = assertThrows(IOException.class, () -> read(client));
                assertTrue(error.getMessage().contains("cluster support disabled"), error.getMessage());
                assertTrue(error.getMessage().contains("set PARITY_REDIS_MODE=single"), error.getMessage());
            }
            assertEquals(0, retries.getCount());
            assertEquals(1, errors.getCount());
        }
    }

    @Test
    void singleModeFailsAtOnceOnARedirectionAsBefore() throws Exception {
        try (FakeClusterNode node = new FakeClusterNode()) {
            node.getErrors.add("MOVED 1234 127.0.0.1:" + node.port());
            Configuration options = late("30 s");
            options.setString("redis.port", String.valueOf(node.port()));
            try (RedisClient client = client(new RedisSinkSettings(options))) {
                IOException error = assertThrows(IOException.class, () -> read(client));
                assertTrue(error.getMessage().contains("set PARITY_REDIS_MODE=cluster"), error.getMessage());
            }
            assertEquals(0, retries.getCount());
            assertEquals(1, errors.getCount());
            assertEquals(0, node.slotsAsked.get());
        }
    }

    private static void waitFor(java.util.function.BooleanSupplier condition) throws InterruptedException {
        long until = System.currentTimeMillis() + 5000;
        while (!condition.getAsBoolean()) {
            assertTrue(System.currentTimeMillis() < until, "timed out");
            Thread.sleep(10);
        }
    }
}
