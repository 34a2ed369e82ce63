package dev.parity.redis;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.metrics.SimpleCounter;
import org.apache.flink.table.api.ValidationException;
import org.junit.jupiter.api.Test;

import java.io.IOException;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

/** redis.wait-replicas: a write counts as done once enough replicas acknowledged it, else it is retried. */
class RedisClientWaitTest {

    private final SimpleCounter retries = new SimpleCounter();
    private final SimpleCounter errors = new SimpleCounter();

    private static RedisSinkSettings settings(FakeClusterNode node, int replicas, String budget) {
        Configuration options = RedisClientClusterTest.late(budget);
        options.setString("redis.port", String.valueOf(node.port()));
        options.setString("redis.socket-timeout", "500 ms");
        options.setString("redis.wait-replicas", String.valueOf(replicas));
        return new RedisSinkSettings(options);
    }

    private String write(RedisClient client) throws IOException {
        return client.call("a test write", (jedis, shas) -> jedis.get("parity:{user_stats:v2}:epoch"));
    }

    @Test
    void withoutReplicasToWaitForNoWaitIsSent() throws Exception {
        try (FakeClusterNode node = new FakeClusterNode();
                RedisClient client = new RedisClient(settings(node, 0, "30 s"), retries, errors)) {
            assertEquals("ok", write(client));
            assertEquals(0, node.waits.get());
        }
    }

    @Test
    void aWriteTooFewReplicasAcknowledgedIsRunAgain() throws Exception {
        try (FakeClusterNode node = new FakeClusterNode();
                RedisClient client = new RedisClient(settings(node, 1, "30 s"), retries, errors)) {
            node.waitReplies.add(0);
            node.waitReplies.add(1);
            assertEquals("ok", write(client));
            assertEquals(2, node.gets.get(), "the write ran again after the first WAIT fell short");
            assertEquals(2, node.waits.get());
            assertEquals(1, retries.getCount());
            assertEquals(0, errors.getCount());
        }
    }

    @Test
    void replicasThatNeverAcknowledgeFailTheWriteNamingTheSetting() throws Exception {
        try (FakeClusterNode node = new FakeClusterNode();
                RedisClient client = new RedisClient(settings(node, 2, "0 ms"), retries, errors)) {
            node.waitReplies.add(1);
            IOException failed = assertThrows(IOException.class, () -> write(client));
            assertTrue(failed.getMessage().contains("1 of 2 replica(s)"), failed.getMessage());
            assertTrue(failed.getMessage().contains("PARITY_REDIS_WAIT_REPLICAS"), failed.getMessage());
            assertEquals(1, errors.getCount());
        }
    }

    @Test
    void aNegativeCountIsRefused() throws Exception {
        try (FakeClusterNode node = new FakeClusterNode()) {
            ValidationException refused = assertThrows(ValidationException.class, () -> settings(node, -1, "30 s"));
            assertTrue(refused.getMessage().contains("redis.wait-replicas"), refused.getMessage());
        }
    }
}
