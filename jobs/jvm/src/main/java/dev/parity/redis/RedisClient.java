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
import redis.clients.jedis.exceptions.JedisConnectionException;
import redis.clients.jedis.exceptions.JedisNoScriptException;

import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLParameters;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

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
    private final String[] scripts;
    private final Counter retries;
    private final Counter errors;
    private Jedis jedis;
    private SSLContext tls;
    private final Map<String, String> shas = new HashMap<>();

    RedisClient(RedisSinkSettings settings, Counter retries, Counter errors, String... scripts) {
        this.settings = settings;
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
            try {
                return write.run(connection(), shas);
            } catch (JedisNoScriptException e) {
                // Redis restarted or SCRIPT FLUSH ran: load the scripts again, once per write.
                drop();
                if (reloaded) {
                    throw failed(what, e);
                }
                reloaded = true;
            } catch (JedisAccessControlException e) {
                errors.inc();
                throw failed(what, e);
            } catch (JedisConnectionException e) {
                if (tlsRefused(e)) {
                    drop();
                    errors.inc();
                    throw failed(what, e);
                }
                drop();
                long now = System.currentTimeMillis();
                began = began < 0 ? now : began;
                if (now + delay - began > settings.retryBudgetMs) {
                    errors.inc();
                    LOG.error("{}: giving up after {} ms of retries: {}", what, now - began, e.getMessage());
                    throw failed(what, e);
                }
                LOG.warn("{}: Redis unavailable ({}); retrying in {} ms", what, e.getMessage(), delay);
                retries.inc();
                sleep(delay);
                delay = Math.min(delay * 2, MAX_DELAY_MS);
            } catch (RuntimeException e) {
                errors.inc();
                throw failed(what, e);
            }
        }
    }

    private Jedis connection() {
        if (jedis == null) {
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
            Jedis fresh = new Jedis(new HostAndPort(settings.host, settings.port), config.build());
            try {
                for (String name : scripts) {
                    shas.put(name, fresh.scriptLoad(LuaScripts.load(name)));
                }
            } catch (RuntimeException e) {
                fresh.close();
                throw e;
            }
            jedis = fresh;
        }
        return jedis;
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
            return "the TLS handshake with Redis at " + settings.address() + " failed (" + cause.getMessage()
                + "); check PARITY_REDIS_TLS_CA_FILE (the CA that signed the server's certificate, which must "
                + "name PARITY_REDIS_HOST)";
        }
        return "Redis at " + settings.address() + ": " + text;
    }

    private void drop() {
        if (jedis != null) {
            try {
                jedis.close();
            } catch (RuntimeException ignored) {
                // The connection is being dropped because it failed; closing it may fail too.
            }
            jedis = null;
        }
        shas.clear();
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
