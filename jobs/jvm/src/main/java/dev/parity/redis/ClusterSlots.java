package dev.parity.redis;

import redis.clients.jedis.HostAndPort;
import redis.clients.jedis.exceptions.JedisClusterException;
import redis.clients.jedis.util.JedisClusterCRC16;
import redis.clients.jedis.util.SafeEncoder;

import java.util.ArrayList;
import java.util.List;

/**
 * A Redis Cluster's slot map, as {@code CLUSTER SLOTS} reports it, and which master owns a key.
 * Pure functions over the reply, so that the lookup is testable without a cluster.
 */
final class ClusterSlots {

    /** An endpoint a node announces when it has none of the kind the cluster prefers. */
    private static final String UNKNOWN_ENDPOINT = "?";

    private ClusterSlots() { }

    /** The slots {@code first} to {@code last} (inclusive) and the master serving them. */
    record Range(int first, int last, HostAndPort master) { }

    /**
     * The ranges of a {@code CLUSTER SLOTS} reply (RESP2, as {@code Jedis.clusterSlots()} returns
     * it): each entry is {@code [first, last, [endpoint, port, id, metadata...], replicas...]}, the
     * master first. The endpoint is the one the cluster announces ({@code cluster-preferred-endpoint-type});
     * an empty one means the host the reply came from ({@code askedHost}), and {@code ?} (the node
     * has no endpoint of the preferred type) falls back to the {@code ip} of the node's metadata.
     */
    static List<Range> parse(List<Object> reply, String askedHost) {
        List<Range> ranges = new ArrayList<>(reply.size());
        for (Object item : reply) {
            List<?> entry = (List<?>) item;
            int first = ((Long) entry.get(0)).intValue();
            int last = ((Long) entry.get(1)).intValue();
            List<?> master = (List<?>) entry.get(2);
            ranges.add(new Range(first, last, endpoint(master, askedHost)));
        }
        return ranges;
    }

    private static HostAndPort endpoint(List<?> node, String askedHost) {
        String host = text(node.get(0));
        int port = ((Long) node.get(1)).intValue();
        if (host == null || host.isEmpty()) {
            host = askedHost;
        } else if (host.equals(UNKNOWN_ENDPOINT)) {
            host = metadata(node, "ip");
        }
        if (host == null || host.isEmpty() || host.equals(UNKNOWN_ENDPOINT)) {
            throw new JedisClusterException("the Redis Cluster announces no endpoint for the master at port "
                + port + " (check cluster-preferred-endpoint-type and cluster-announce-hostname)");
        }
        return new HostAndPort(host, port);
    }

    /** A field of a node's metadata (Redis 7: a flat list of names and values after the node id). */
    private static String metadata(List<?> node, String name) {
        if (node.size() > 3 && node.get(3) instanceof List<?> fields) {
            for (int i = 0; i + 1 < fields.size(); i += 2) {
                if (name.equals(text(fields.get(i)))) {
                    return text(fields.get(i + 1));
                }
            }
        }
        return null;
    }

    private static String text(Object value) {
        if (value == null) {
            return null;
        }
        return value instanceof byte[] bytes ? SafeEncoder.encode(bytes) : value.toString();
    }

    /** The slot of {@code key}: of its hash tag ({@code {...}}) when it has one, as Redis computes it. */
    static int slot(String key) {
        return JedisClusterCRC16.getSlot(key);
    }

    /**
     * The master owning {@code key}'s slot.
     *
     * @throws JedisClusterException no range holds the slot (a cluster with uncovered slots)
     */
    static HostAndPort owner(List<Range> ranges, String key) {
        int slot = slot(key);
        for (Range range : ranges) {
            if (range.first() <= slot && slot <= range.last()) {
                return range.master();
            }
        }
        throw new JedisClusterException("no master of the Redis Cluster serves slot " + slot + " (of " + key + ")");
    }

    /**
     * The hash tag of {@code key} as Redis finds it: what lies between the first '{' and the first
     * '}' after it, when that is not empty; null when the whole key is hashed.
     */
    static String hashTag(String key) {
        int open = key.indexOf('{');
        if (open < 0) {
            return null;
        }
        int close = key.indexOf('}', open + 1);
        return close <= open + 1 ? null : key.substring(open + 1, close);
    }
}
