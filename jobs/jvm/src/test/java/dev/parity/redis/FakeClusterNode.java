package dev.parity.redis;

import java.io.BufferedInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Queue;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Just enough of a Redis Cluster node, over RESP2 on a loopback port, to drive the client's routing:
 * it answers CLUSTER SLOTS with one range naming {@link #master} (itself unless set), SCRIPT LOAD
 * with a digest, GET with the errors queued in {@link #getErrors}, then with "ok", and WAIT with the
 * counts queued in {@link #waitReplies}, then with 0.
 */
final class FakeClusterNode implements AutoCloseable {

    static final String DIGEST = "0123456789abcdef0123456789abcdef01234567";

    private final ServerSocket server;
    private final List<Socket> sockets = new CopyOnWriteArrayList<>();
    /** Error replies to GET (without the leading '-'), one per GET, before it answers "ok". */
    final Queue<String> getErrors = new ConcurrentLinkedQueue<>();
    final AtomicInteger slotsAsked = new AtomicInteger();
    final AtomicInteger gets = new AtomicInteger();
    /** Replies to WAIT (replicas acknowledged), one per WAIT, before it answers 0. */
    final Queue<Integer> waitReplies = new ConcurrentLinkedQueue<>();
    final AtomicInteger waits = new AtomicInteger();
    final AtomicInteger open = new AtomicInteger();
    volatile boolean clusterEnabled = true;
    volatile String masterHost = "127.0.0.1";
    volatile int masterPort;

    FakeClusterNode() throws IOException {
        server = new ServerSocket(0, 50, InetAddress.getLoopbackAddress());
        masterPort = server.getLocalPort();
        Thread acceptor = new Thread(this::accept, "fake-cluster-node-" + port());
        acceptor.setDaemon(true);
        acceptor.start();
    }

    int port() {
        return server.getLocalPort();
    }

    String address() {
        return "127.0.0.1:" + port();
    }

    /** A loopback port nothing listens on: connecting to it is refused. */
    static int deadPort() throws IOException {
        try (ServerSocket socket = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return socket.getLocalPort();
        }
    }

    private void accept() {
        while (!server.isClosed()) {
            try {
                Socket socket = server.accept();
                sockets.add(socket);
                open.incrementAndGet();
                Thread serve = new Thread(() -> serve(socket));
                serve.setDaemon(true);
                serve.start();
            } catch (IOException e) {
                return;  // closed
            }
        }
    }

    private void serve(Socket socket) {
        try (socket) {
            InputStream in = new BufferedInputStream(socket.getInputStream());
            OutputStream out = socket.getOutputStream();
            while (true) {
                List<String> command = read(in);
                if (command == null) {
                    return;
                }
                out.write(answer(command).getBytes(StandardCharsets.UTF_8));
                out.flush();
            }
        } catch (IOException e) {
            // The client hung up.
        } finally {
            open.decrementAndGet();
        }
    }

    private String answer(List<String> command) {
        String name = command.get(0).toUpperCase();
        String sub = command.size() > 1 ? command.get(1).toUpperCase() : "";
        if (name.equals("CLUSTER") && sub.equals("SLOTS")) {
            slotsAsked.incrementAndGet();
            if (!clusterEnabled) {
                return "-ERR This instance has cluster support disabled\r\n";
            }
            String host = masterHost;
            return "*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$" + host.length() + "\r\n" + host + "\r\n:" + masterPort
                + "\r\n$2\r\nid\r\n";
        }
        if (name.equals("SCRIPT") && sub.equals("LOAD")) {
            return "$40\r\n" + DIGEST + "\r\n";
        }
        if (name.equals("GET")) {
            gets.incrementAndGet();
            String error = getErrors.poll();
            return error != null ? "-" + error + "\r\n" : "$2\r\nok\r\n";
        }
        if (name.equals("WAIT")) {
            waits.incrementAndGet();
            Integer acknowledged = waitReplies.poll();
            return ":" + (acknowledged != null ? acknowledged : 0) + "\r\n";
        }
        return "+OK\r\n";
    }

    /** One command (an array of bulk strings), or null at the end of the stream. */
    private static List<String> read(InputStream in) throws IOException {
        String header = line(in);
        if (header == null) {
            return null;
        }
        if (!header.startsWith("*")) {
            throw new IOException("not a command: " + header);
        }
        int count = Integer.parseInt(header.substring(1));
        List<String> parts = new ArrayList<>(count);
        for (int i = 0; i < count; i++) {
            String length = line(in);
            if (length == null || !length.startsWith("$")) {
                throw new IOException("not a bulk string: " + length);
            }
            byte[] data = in.readNBytes(Integer.parseInt(length.substring(1)) + 2);
            parts.add(new String(data, 0, data.length - 2, StandardCharsets.UTF_8));
        }
        return parts;
    }

    private static String line(InputStream in) throws IOException {
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        int previous = -1;
        while (true) {
            int b = in.read();
            if (b < 0) {
                return null;
            }
            if (previous == '\r' && b == '\n') {
                byte[] all = bytes.toByteArray();
                return new String(all, 0, all.length - 1, StandardCharsets.US_ASCII);
            }
            bytes.write(b);
            previous = b;
        }
    }

    @Override
    public void close() throws IOException {
        server.close();
        for (Socket socket : sockets) {
            socket.close();
        }
    }
}
