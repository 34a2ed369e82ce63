"""Throwaway TLS certificates for local services and their tests, made with ``openssl``.

One CA signs a server certificate for 127.0.0.1 and localhost and a client
certificate; a second CA signs nothing, for checks that an untrusted server is
refused. Keys are P-256, unencrypted, in PKCS#8 PEM (what Kafka's PEM key store,
redis-server, nginx, Python's ``ssl`` and Java's ``KeyFactory`` all read).
They are valid for a short while only: good for a local stack and tests, never
for anything reachable from elsewhere.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from parity.errors import StackError

_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


@dataclass(frozen=True)
class Certs:
    """The files ``make_certs`` wrote; each ``.pem`` certificate's key is beside it as ``.key``."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def other_ca(self) -> Path:
        """A CA that signed nothing here: a client trusting it must refuse the server."""
        return self.folder / "other-ca.pem"

    @property
    def server(self) -> Path:
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server.key"

    @property
    def server_keystore(self) -> Path:
        """The server's key and certificate in one file (Kafka's PEM key store)."""
        return self.folder / "server-keystore.pem"

    @property
    def client(self) -> Path:
        return self.folder / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.folder / "client.key"


def _openssl(args: list[str], cwd: Path) -> None:
    try:
        subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as exc:
        raise StackError("openssl is not installed; install it (apt-get install openssl)") from exc
    except subprocess.CalledProcessError as exc:
        raise StackError(f"openssl {args[0]} failed in {cwd}: {exc.stderr.strip()}") from exc


def _ca(name: str, cn: str, folder: Path, days: int) -> None:
    files = ["-keyout", f"{name}.key", "-out", f"{name}.pem"]
    _openssl(["req", "-x509", *_KEY, *files, "-days", str(days), "-subj", f"/CN={cn}"], folder)


def _signed(name: str, cn: str, extensions: str, folder: Path, days: int) -> None:
    _openssl(["req", *_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}"], folder)
    (folder / f"{name}.ext").write_text(extensions)
    signer = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial"]
    out = ["-out", f"{name}.pem", "-days", str(days), "-extfile", f"{name}.ext"]
    _openssl(["x509", "-req", "-in", f"{name}.csr", *signer, *out], folder)


def make_certs(folder: Path, *, days: int = 2) -> Certs:
    """Write a CA, a server and a client certificate it signed, and an unrelated CA, into ``folder``.

    Raises:
        StackError: openssl is missing or failed.
    """
    folder.mkdir(parents=True, exist_ok=True)
    _ca("ca", "parity local CA", folder, days)
    _ca("other-ca", "someone else's CA", folder, days)
    # Clients check the server's name: the local services are reached as 127.0.0.1 or localhost.
    _signed(
        "server",
        "localhost",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        folder,
        days,
    )
    _signed("client", "parity", "extendedKeyUsage=clientAuth\n", folder, days)
    certs = Certs(folder)
    certs.server_keystore.write_text(certs.server_key.read_text() + certs.server.read_text())
    for key in folder.glob("*.key"):
        key.chmod(0o600)
    certs.server_keystore.chmod(0o600)
    return certs
