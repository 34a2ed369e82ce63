package dev.parity.redis;

import dev.parity.tls.PemTls;
import org.apache.flink.metrics.Counter;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import redis.clients.jedis.DefaultJedisClientConfig;
import redis.clients.jedis.DefaultRedisCredentials;
import redis.clients.jedis.HostAndPort;
import redis.clients.jedis.Jedis;
import redis.clients.jedis.exceptions.JedisAccessControlException;
import redis.clients.jedis.exceptions.JedisClusterException;
import redis.clients.jedis.exceptions.JedisConnectionException;
import redis.clients.jedis.exceptions.JedisDataException;
import redis.clients.jedis.exceptions.JedisNoScriptException;
import redis.clients.jedis.exceptions.JedisRedirectionException;

import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLParameters;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Collectors;

/**
 * One connection to the online store for one writer, with the scripts loaded and the job's retry
 * policy ({@code sinks.retry} is the Python twin).
 *
 * <p>A write that finds Redis unreachable or slow (a connection error or a socket timeout) is
 * retried whole on a new connection, waiting 0.1 s doubling to 2 s, until the retry budget
 * (counted from the first failure, attempts included) is spent; then the error goes up and the
 * job restarts from its checkpoint. Only idempotent writes go through here: each caller says why
 * its write is one. A refused login, a refused TLS handshake or a script error would fail the same
 * way again: never retried.
 *
 * <p>Over TLS ({@code redis.tls}) the server's certificate must chain to {@code redis.tls.ca-file}
 * (the JVM's CAs without one) and name {@code redis.host}, as the Python clients check it.
 *
 * <p>In cluster mode ({@code redis.mode=cluster}) the client still holds one plain connection,
 * to the master that owns the writer's slot. Every key of a view carries the view's hash tag
 * ({@code parity:{user_stats:v2}:...}, see sinks.redis_layout), so every key a writer names, and
 * every key its scripts build from the key heads, hashes to that one slot: each pipeline and each
 * script call runs whole on one node, as against a single Redis. To connect, the client asks the
 * seeds ({@code redis.cluster.nodes}), in turn until one answers, for the slot map
 * ({@code CLUSTER SLOTS}), then connects to the master of the slot of {@link
 * RedisSinkSettings#routingKey} at the endpoint the cluster announces (over TLS the certificate
 * must name that host), and loads the scripts there. A redirection ({@code MOVED} or {@code ASK}:
 * the slot moved in a resharding or a failover), like {@code CLUSTERDOWN} (a failover under way)
 * and {@code TRYAGAIN} (a migration under way), drops the connection and is retried like an
 * unreachable Redis, within the same budget: the next attempt asks the seeds for the owner again.
 * Seeds none of which answers are an unreachable Redis. While a slot migrates the seeds still name
 * its old owner, which answers {@code ASK} or {@code TRYAGAIN} for the keys already moved: a
 * migration of a view's slot that outlasts the retry budget fails the job, which restarts from its
 * checkpoint.
 *
 * <p>Redis replicates asynchronously: a master that dies can take writes it acknowledged with it,
 * and its promoted replica never had them. With {@code redis.wait-replicas} N > 0 every write is
 * followed by {@code WAIT N} on the same connection, and a write fewer than N replicas acknowledged
 * within {@link RedisSinkSettings#waitTimeoutMs} is retried like one Redis did not answer: once
 * the sink counts a write done, it is on N replicas as well as on the master.
 */
final class RedisClient implements AutoCloseable {

    private static final Logger LOG = LoggerFactory.getLogger(RedisClient.class);
    private static final long FIRST_DELAY_MS = 100;
    private static final long MAX_DELAY_MS = 2000;

    /** One write; it may run more than once. */
    @FunctionalInterface
    interface Write<T> {
        T run(Jedis jedis, Map<String, String> shas);
    }

    private final RedisSinkSettings settings;
    private final boolean cluster;
    private final String routingKey;
    private final String[] scripts;
    private final Counter retries;
    private final Counter errors;
    private Jedis jedis;
    /** The node last connected to (cluster mode), for messages. */
    private HostAndPort node;
    private SSLContext tls;
    private final Map<String, String> shas = new HashMap<>();

    RedisClient(RedisSinkSettings settings, Counter retries, Counter errors, String... scripts) {
        this.settings = settings;
        this.cluster = settings.mode == RedisSinkSettings.Mode.CLUSTER;
        this.routingKey = settings.routingKey();
        this.scripts = scripts;
        this.retries = retries;
        this.errors = errors;
    }

    /**
     * Run {@code write}, retried through a short outage.
     *
     * @throws IOException Redis refused or did not answer within the retry budget; the message
     *     names {@code what} and the setting to look at.
     */
    <T> T call(String what, Write<T> write) throws IOException {
        long began = -1;
        long delay = FIRST_DELAY_MS;
        boolean reloaded = false;
        while (true) {
            RuntimeException error;
            String why;
            try {
                Jedis jedis = connection();
                T result = write.run(jedis, shas);
                replicated(jedis);
                return result;
            } catch (NotReplicated e) {
                error = e;
                why = e.getMessage();
            } catch (JedisNoScriptException e) {
                // Redis restarted or SCRIPT FLUSH ran: load the scripts again, once per write.
                drop();
                if (reloaded) {
                    throw failed(what, e);
                }
                reloaded = true;
                continue;
            } catch (JedisAccessControlException e) {
                errors.inc();
                throw failed(what, e);
            } catch (JedisConnectionException e) {
                drop();
                if (tlsRefused(e)) {
                    errors.inc();
                    throw failed(what, e);
                }
                error = e;
                why = "Redis unavailable (" + e.getMessage() + ")";
            } catch (RuntimeException e) {
                if (!cluster || !slotMoving(e)) {
                    errors.inc();
                    throw failed(what, e);
                }
                // The slot moved (resharding, failover) or is moving: the next attempt asks the
                // seeds for its owner again.
                drop();
                error = e;
                why = "the Redis Cluster slot of " + routingKey + " is moving (" + e.getMessage() + ")";
            }
            long now = System.currentTimeMillis();
            began = began < 0 ? now : began;
            if (now + delay - began > settings.retryBudgetMs) {
                errors.inc();
                LOG.error("{}: giving up after {} ms of retries: {}", what, now - began, error.getMessage());
                throw failed(what, error);
            }
            LOG.warn("{}: {}; retrying in {} ms", what, why, delay);
            retries.inc();
            sleep(delay);
            delay = Math.min(delay * 2, MAX_DELAY_MS);
        }
    }

    /** A write the master took but too few replicas acknowledged in time: retried whole. */
    static final class NotReplicated extends RuntimeException {
        NotReplicated(String message) {
            super(message);
        }
    }

    private void replicated(Jedis jedis) {
        if (settings.waitReplicas == 0) {
            return;
        }
        long acknowledged = jedis.waitReplicas(settings.waitReplicas, settings.waitTimeoutMs);
        if (acknowledged < settings.waitReplicas) {
            throw new NotReplicated(acknowledged + " of " + settings.waitReplicas + " replica(s) of " + where()
                + " acknowledged the write within " + settings.waitTimeoutMs + " ms (PARITY_REDIS_WAIT_REPLICAS)");
        }
    }

    private Jedis connection() {
        if (jedis == null) {
            HostAndPort target = cluster ? owner() : new HostAndPort(settings.host, settings.port);
            node = target;
            Jedis fresh = connect(target);
            try {
                for (String name : scripts) {
                    shas.put(name, fresh.scriptLoad(LuaScripts.load(name)));
                }
            } catch (RuntimeException e) {
                quietly(fresh);
                throw e;
            }
            jedis = fresh;
        }
        return jedis;
    }

    /** A connection to {@code address} with the job's settings: timeouts, login, TLS. */
    private Jedis connect(HostAndPort address) {
        DefaultJedisClientConfig.Builder config = DefaultJedisClientConfig.builder()
            .connectionTimeoutMillis(settings.socketTimeoutMs)
            .socketTimeoutMillis(settings.socketTimeoutMs)
            .database(settings.db)
            .clientName("parity-sink");
        if (settings.password != null || settings.passwordFile != null) {
            config.credentialsProvider(() -> new DefaultRedisCredentials(settings.username, password()));
        }
        if (settings.tls) {
            config.ssl(true).sslSocketFactory(tlsContext().getSocketFactory()).sslParameters(checkHostName());
        }
        return new Jedis(address, config.build());
    }

    /**
     * Cluster mode: the master owning the slot of the routing key, from the first seed that
     * answers. A seed that cannot be reached is skipped; one that refuses the login or the TLS
     * handshake, or is no cluster node, fails the write as a single Redis would.
     *
     * @throws JedisConnectionException no seed answered (retried as an unreachable Redis)
     */
    private HostAndPort owner() {
        JedisConnectionException last = null;
        for (HostAndPort seed : settings.clusterNodes) {
            node = seed;
            List<Object> slots;
            Jedis asked = null;
            try {
                asked = connect(seed);
                slots = asked.clusterSlots();
            } catch (JedisConnectionException e) {
                if (tlsRefused(e)) {
                    throw e;
                }
                LOG.warn("Redis Cluster seed {} did not answer: {}", seed, e.getMessage());
                last = e;
                continue;
            } finally {
                quietly(asked);
            }
            return ClusterSlots.owner(ClusterSlots.parse(slots, seed.getHost()), routingKey);
        }
        node = null;
        throw new JedisConnectionException("no seed of the Redis Cluster answered (PARITY_REDIS_CLUSTER_NODES="
            + seeds() + ")" + (last == null ? "" : ": " + last.getMessage()), last);
    }

    private String seeds() {
        return settings.clusterNodes.stream().map(HostAndPort::toString).collect(Collectors.joining(","));
    }

    /**
     * Built once per client: reading the PEM files again on every reconnect buys nothing. A file that
     * cannot be read throws an IllegalArgumentException naming its setting, which {@link #call} does
     * not retry.
     */
    private SSLContext tlsContext() {
        if (tls == null) {
            tls = PemTls.context(settings.tlsCaFile, settings.tlsCertFile, settings.tlsKeyFile, "PARITY_REDIS_TLS_");
        }
        return tls;
    }

    /** The server's certificate must name the host connected to, as an HTTPS client checks it. */
    static SSLParameters checkHostName() {
        SSLParameters parameters = new SSLParameters();
        parameters.setEndpointIdentificationAlgorithm("HTTPS");
        return parameters;
    }

    /**
     * Whether a cluster answered that the slot is elsewhere or in transit: a redirection
     * ({@code MOVED}, {@code ASK}), {@code CLUSTERDOWN} (a failover under way), or {@code TRYAGAIN}
     * (a script's keys split between two nodes while the slot migrates).
     */
    static boolean slotMoving(RuntimeException e) {
        return e instanceof JedisRedirectionException || e instanceof JedisClusterException
            || (e instanceof JedisDataException && String.valueOf(e.getMessage()).startsWith("TRYAGAIN"));
    }

    /** Whether a connection failed in the TLS handshake (untrusted or misnamed certificate). */
    static boolean tlsRefused(Throwable e) {
        for (Throwable cause = e; cause != null; cause = cause.getCause()) {
            if (cause instanceof SSLException) {
                return true;
            }
        }
        return false;
    }

    private String password() {
        if (settings.password != null) {
            return settings.password;
        }
        try {
            return Files.readString(Path.of(settings.passwordFile), StandardCharsets.UTF_8).strip();
        } catch (IOException e) {
            throw new JedisAccessControlException("cannot read PARITY_REDIS_PASSWORD_FILE " + settings.passwordFile
                + ": " + e.getMessage());
        }
    }

    private IOException failed(String what, RuntimeException e) {
        return new IOException(what + ": " + explain(e), e);
    }

    private String explain(RuntimeException e) {
        String text = String.valueOf(e.getMessage());
        if (e instanceof JedisAccessControlException) {
            String user = settings.username == null ? "the default user" : "user '" + settings.username + "'";
            if (settings.password == null && settings.passwordFile == null) {
                return text + ": Redis wants a login; set PARITY_REDIS_USERNAME and PARITY_REDIS_PASSWORD";
            }
            if (text.startsWith("NOPERM")) {
                return text + ": the ACL user PARITY_REDIS_USERNAME=" + settings.username
                    + " lacks a command or key it needs";
            }
            return text + ": Redis refused " + user + "; check PARITY_REDIS_USERNAME and PARITY_REDIS_PASSWORD"
                + " (or PARITY_REDIS_PASSWORD_FILE)";
        }
        if (tlsRefused(e)) {
            Throwable cause = e;
            while (cause.getCause() != null) {
                cause = cause.getCause();
            }
            return "the TLS handshake with Redis at " + where() + " failed (" + cause.getMessage()
                + "); check PARITY_REDIS_TLS_CA_FILE (the CA that signed the server's certificate, which must "
                + (cluster ? "name the host the cluster announces for the node, or the seed's host in "
                    + "PARITY_REDIS_CLUSTER_NODES)" : "name PARITY_REDIS_HOST)");
        }
        if (!cluster && slotMoving(e)) {
            return "Redis at " + where() + ": " + text + ": it is a Redis Cluster; set PARITY_REDIS_MODE=cluster "
                + "and PARITY_REDIS_CLUSTER_NODES";
        }
        if (cluster && text.contains("cluster support disabled")) {
            return "Redis at " + where() + ": " + text + ": it is no Redis Cluster; set PARITY_REDIS_MODE=single "
                + "(with PARITY_REDIS_HOST and PARITY_REDIS_PORT) or name cluster nodes in PARITY_REDIS_CLUSTER_NODES";
        }
        if (cluster && node == null) {
            return text;  // no seed answered: the message names them
        }
        return "Redis at " + where() + ": " + text;
    }

    /** The server a message is about: host:port, or in cluster mode the node and the seeds. */
    private String where() {
        if (!cluster) {
            return settings.address();
        }
        return (node == null ? "the Redis Cluster" : node) + " (cluster seeds " + seeds() + ")";
    }

    private void drop() {
        quietly(jedis);
        jedis = null;
        shas.clear();
    }

    private static void quietly(Jedis connection) {
        if (connection != null) {
            try {
                connection.close();
            } catch (RuntimeException ignored) {
                // The connection is being dropped because it failed or is done; closing it may fail too.
            }
        }
    }

    private static void sleep(long ms) throws IOException {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted while waiting to retry a Redis write", e);
        }
    }

    @Override
    public void close() {
        drop();
    }
}
