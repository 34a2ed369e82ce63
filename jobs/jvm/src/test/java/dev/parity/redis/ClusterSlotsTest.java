package dev.parity.redis;

import org.junit.jupiter.api.Test;
import redis.clients.jedis.HostAndPort;
import redis.clients.jedis.exceptions.JedisClusterException;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.List;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class ClusterSlotsTest {

    private static byte[] bytes(String text) {
        return text.getBytes(StandardCharsets.UTF_8);
    }

    /** One node of a CLUSTER SLOTS entry, as Jedis returns it (RESP2): endpoint, port, id, metadata. */
    private static List<Object> node(String endpoint, long port, Object... metadata) {
        return Arrays.asList(endpoint == null ? null : bytes(endpoint), port, bytes("id-" + port),
            Arrays.asList(metadata));
    }

    private static List<Object> entry(long first, long last, List<Object> master, List<Object> replica) {
        return List.of(first, last, master, replica);
    }

    /** Three masters, each with a replica; the master of 5461-10922 also holds slot 0. */
    private static final List<Object> THREE_MASTERS = List.of(
        entry(1, 5460, node("10.0.0.1", 7000), node("10.0.0.4", 7003)),
        entry(0, 0, node("10.0.0.2", 7001), node("10.0.0.5", 7004)),
        entry(5461, 10922, node("10.0.0.2", 7001), node("10.0.0.5", 7004)),
        entry(10923, 16383, node("10.0.0.3", 7002), node("10.0.0.6", 7005)));

    @Test
    void parsesTheRangesAndTheirMasters() {
        List<ClusterSlots.Range> ranges = ClusterSlots.parse(THREE_MASTERS, "seed");
        assertEquals(4, ranges.size());
        assertEquals(new ClusterSlots.Range(1, 5460, new HostAndPort("10.0.0.1", 7000)), ranges.get(0));
        assertEquals(new ClusterSlots.Range(10923, 16383, new HostAndPort("10.0.0.3", 7002)), ranges.get(3));
    }

    @Test
    void aKeyIsOwnedByTheMasterOfItsSlot() {
        List<ClusterSlots.Range> ranges = ClusterSlots.parse(THREE_MASTERS, "seed");
        // Well-known slots: "foo" hashes to 12182, "bar" to 5061.
        assertEquals(12182, ClusterSlots.slot("foo"));
        assertEquals(new HostAndPort("10.0.0.3", 7002), ClusterSlots.owner(ranges, "foo"));
        assertEquals(5061, ClusterSlots.slot("bar"));
        assertEquals(new HostAndPort("10.0.0.1", 7000), ClusterSlots.owner(ranges, "bar"));
    }

    @Test
    void everyKeyOfAViewGoesToTheNodeOfItsHashTag() {
        List<ClusterSlots.Range> ranges = ClusterSlots.parse(THREE_MASTERS, "seed");
        HostAndPort owner = ClusterSlots.owner(ranges, "user_stats:v2");
        for (String key : List.of("parity:{user_stats:v2}:e:u1", "parity:{user_stats:v2}:due",
                "parity:{user_stats:v2}:completeness", "parity:{user_stats:v2}:w:some-other-entity",
                "other-prefix:{user_stats:v2}:epoch")) {
            assertEquals(ClusterSlots.slot("user_stats:v2"), ClusterSlots.slot(key), key);
            assertEquals(owner, ClusterSlots.owner(ranges, key), key);
        }
        // Without the tag the whole key is hashed.
        assertNotEquals(ClusterSlots.slot("parity:user_stats:v2:e:u1"), ClusterSlots.slot("parity:user_stats:v2:due"));
    }

    @Test
    void aMapForOneSlotRoutesThere() {
        int slot = ClusterSlots.slot("parity:{user_stats:v2}:due");
        List<Object> reply = List.of(
            entry(0, slot - 1, node("a", 1), node("b", 2)),
            entry(slot, slot, node("c", 3), node("d", 4)),
            entry(slot + 1, 16383, node("a", 1), node("b", 2)));
        assertEquals(new HostAndPort("c", 3),
            ClusterSlots.owner(ClusterSlots.parse(reply, "seed"), "parity:{user_stats:v2}:e:u1"));
    }

    @Test
    void anEmptyEndpointIsTheHostAskedAndAnUnknownOneItsIp() {
        List<Object> reply = List.of(
            entry(0, 8191, node(null, 7000), node("r1", 7003)),
            entry(8192, 16383, node("?", 7001, bytes("ip"), bytes("10.0.0.2"), bytes("hostname"), bytes("")),
                node("r2", 7004)));
        List<ClusterSlots.Range> ranges = ClusterSlots.parse(reply, "seed.example");
        assertEquals(new HostAndPort("seed.example", 7000), ranges.get(0).master());
        assertEquals(new HostAndPort("10.0.0.2", 7001), ranges.get(1).master());
    }

    @Test
    void aHostnameAnnouncedIsKept() {
        List<Object> reply = List.of(entry(0, 16383,
            node("redis-0.redis.svc", 6379, bytes("ip"), bytes("10.0.0.1")), node("redis-1.redis.svc", 6379)));
        assertEquals(new HostAndPort("redis-0.redis.svc", 6379), ClusterSlots.parse(reply, "seed").get(0).master());
    }

    @Test
    void aSlotNoMasterServesIsAClusterError() {
        List<ClusterSlots.Range> ranges = ClusterSlots.parse(List.of(entry(0, 100, node("a", 1), node("b", 2))), "s");
        JedisClusterException error = assertThrows(JedisClusterException.class, () -> ClusterSlots.owner(ranges, "foo"));
        assertTrue(error.getMessage().contains("slot 12182"), error.getMessage());
    }

    @Test
    void hashTagsAreFoundAsRedisFindsThem() {
        assertEquals("user_stats:v2", ClusterSlots.hashTag("parity:{user_stats:v2}:e:u1"));
        assertEquals("a", ClusterSlots.hashTag("x{a}{b}"));
        assertEquals("{a", ClusterSlots.hashTag("{{a}}"));
        assertNull(ClusterSlots.hashTag("parity:user_stats:v2"));
        assertNull(ClusterSlots.hashTag("parity:{}:e:{u1}"));
        assertNull(ClusterSlots.hashTag("parity:{user_stats"));
    }
}
