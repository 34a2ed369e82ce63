package dev.parity.tls;

import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

import java.nio.file.Files;
import java.nio.file.Path;
import javax.net.ssl.SSLContext;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

class PemTlsTest {

    @TempDir
    static Path folder;
    static TestCerts certs;

    @BeforeAll
    static void certificates() throws Exception {
        certs = TestCerts.make(folder);
    }

    @Test
    void readsACaAClientCertificateAndItsKeyInTheSameOrAnotherFile() throws Exception {
        assertNotNull(PemTls.context(certs.ca().toString(), null, null, "PARITY_X_"));
        assertNotNull(PemTls.context(certs.ca().toString(), certs.client().toString(), certs.clientKey().toString(),
            "PARITY_X_"));
        Path both = folder.resolve("client-with-key.pem");
        Files.writeString(both, Files.readString(certs.clientKey()) + Files.readString(certs.client()));
        SSLContext context = PemTls.context(null, both.toString(), null, "PARITY_X_");
        assertEquals("TLS", context.getProtocol());
    }

    @Test
    void errorsNameTheSettingToFix() throws Exception {
        IllegalArgumentException missing = assertThrows(IllegalArgumentException.class,
            () -> PemTls.context(folder.resolve("nope.pem").toString(), null, null, "PARITY_X_"));
        assertTrue(missing.getMessage().startsWith("PARITY_X_CA_FILE: cannot read"), missing.getMessage());

        IllegalArgumentException noCert = assertThrows(IllegalArgumentException.class,
            () -> PemTls.context(certs.clientKey().toString(), null, null, "PARITY_X_"));
        assertTrue(noCert.getMessage().contains("PARITY_X_CA_FILE: ") && noCert.getMessage().contains("no PEM certificate"),
            noCert.getMessage());

        IllegalArgumentException noKey = assertThrows(IllegalArgumentException.class,
            () -> PemTls.context(null, certs.client().toString(), null, "PARITY_X_"));
        assertTrue(noKey.getMessage().contains("PARITY_X_CERT_FILE: ") && noKey.getMessage().contains("no PEM private key"),
            noKey.getMessage());

        Path sec1 = folder.resolve("sec1.key");
        Files.writeString(sec1, "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n");
        IllegalArgumentException oldForm = assertThrows(IllegalArgumentException.class,
            () -> PemTls.context(null, certs.client().toString(), sec1.toString(), "PARITY_X_"));
        assertTrue(oldForm.getMessage().contains("PARITY_X_KEY_FILE") && oldForm.getMessage().contains("openssl pkcs8"),
            oldForm.getMessage());
    }
}
