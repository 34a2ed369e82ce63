package dev.parity.tls;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;

import static org.junit.jupiter.api.Assumptions.assumeTrue;

/**
 * Throwaway PEM files for tests, made with openssl as stack/certs.py makes them: a CA, a server
 * certificate it signed for 127.0.0.1, a client certificate, and a CA that signed nothing.
 */
public record TestCerts(Path folder) {

    public Path ca() { return folder.resolve("ca.pem"); }
    public Path otherCa() { return folder.resolve("other-ca.pem"); }
    public Path server() { return folder.resolve("server.pem"); }
    public Path serverKey() { return folder.resolve("server.key"); }
    public Path client() { return folder.resolve("client.pem"); }
    public Path clientKey() { return folder.resolve("client.key"); }

    public static TestCerts make(Path folder) throws IOException, InterruptedException {
        String key = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";
        openssl(folder, "req -x509 " + key + " -keyout ca.key -out ca.pem -days 1 -subj /CN=test-ca");
        openssl(folder, "req -x509 " + key + " -keyout other-ca.key -out other-ca.pem -days 1 -subj /CN=other");
        for (String name : List.of("server", "client")) {
            openssl(folder, "req " + key + " -keyout " + name + ".key -out " + name + ".csr -subj /CN=" + name);
            Files.writeString(folder.resolve(name + ".ext"), name.equals("server")
                ? "subjectAltName=IP:127.0.0.1,DNS:localhost\n" : "extendedKeyUsage=clientAuth\n");
            openssl(folder, "x509 -req -in " + name + ".csr -CA ca.pem -CAkey ca.key -CAcreateserial -out " + name
                + ".pem -days 1 -extfile " + name + ".ext");
        }
        return new TestCerts(folder);
    }

    private static void openssl(Path folder, String command) throws IOException, InterruptedException {
        List<String> argv = new ArrayList<>(List.of("openssl"));
        argv.addAll(List.of(command.split(" ")));
        Process process;
        try {
            process = new ProcessBuilder(argv).directory(folder.toFile()).redirectErrorStream(true).start();
        } catch (IOException e) {
            assumeTrue(false, "openssl is not installed");
            throw e;
        }
        String out = new String(process.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (process.waitFor() != 0) {
            throw new IOException("openssl " + command + " failed: " + out);
        }
    }
}
