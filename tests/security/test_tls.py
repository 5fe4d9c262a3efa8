"""``modelhost up --ssl-keyfile --ssl-certfile`` serves HTTPS directly.

A self-signed certificate for 127.0.0.1 is made in the test with ``cryptography``; the server
answers over TLS to a client that trusts that certificate, refuses plain HTTP on the same port,
keeps requiring a key, and refuses to start with half a pair or a key that does not match.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.security.support import AUTH
from tests.servers import free_port, server_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def self_signed(folder: Path, name: str = "server") -> tuple[Path, Path]:
    """A P-256 key and a certificate for 127.0.0.1 and localhost, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    keyfile, certfile = folder / f"{name}.key", folder / f"{name}.crt"
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    keyfile.chmod(0o600)
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return keyfile, certfile


def up(home: Path, port: int, *tls_args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "modelhost.cli", "up", "--port", str(port), *tls_args]
    return subprocess.Popen(cmd, env=server_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@pytest.fixture(scope="module")
def https(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The URL of a server speaking HTTPS, and the certificate to trust."""
    tmp = tmp_path_factory.mktemp("tls")
    keyfile, certfile = self_signed(tmp)
    port = free_port()
    proc = up(tmp / "home", port, "--ssl-keyfile", str(keyfile), "--ssl-certfile", str(certfile))
    url = f"https://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline, "server not ready over https"
            try:
                if (
                    httpx.get(url + "/v2/health/ready", verify=ssl_context(certfile), timeout=1).status_code
                    == 200
                ):
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, certfile
    finally:
        stop(proc)


def ssl_context(certfile: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certfile))


def test_the_server_answers_over_https(https: tuple[str, Path]) -> None:
    url, certfile = https
    with httpx.Client(base_url=url, verify=ssl_context(certfile), timeout=10) as c:
        r = c.get("/api/v1/models", headers=AUTH)
        assert r.status_code == 200 and r.json() == []
        assert c.get("/api/v1/models").status_code == 401  # TLS does not replace the key
        assert r.extensions["http_version"] == b"HTTP/1.1"


def test_tls_is_real(https: tuple[str, Path], tmp_path: Path) -> None:
    """Plain HTTP on the TLS port gets no answer, and a client that does not trust the
    certificate (another self-signed one) refuses the connection."""
    url, certfile = https
    with pytest.raises(httpx.TransportError):
        httpx.get(url.replace("https://", "http://") + "/v2/health/live", timeout=5)
    _, other = self_signed(tmp_path, "other")
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(url + "/v2/health/live", verify=ssl_context(other), timeout=5)
    with ssl.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5) as sock:
        ctx = ssl_context(certfile)
        with ctx.wrap_socket(sock, server_hostname="127.0.0.1") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")


@pytest.mark.parametrize(
    "args",
    [
        ["--ssl-keyfile", "{key}"],
        ["--ssl-certfile", "{cert}"],
        ["--ssl-keyfile", "{cert}", "--ssl-certfile", "{cert}"],
        ["--ssl-keyfile", "{other_key}", "--ssl-certfile", "{cert}"],
        ["--ssl-keyfile", "/no/such.key", "--ssl-certfile", "{cert}"],
    ],
    ids=["key only", "cert only", "cert as key", "key of another cert", "missing file"],
)
def test_up_refuses_a_bad_pair_before_starting(tmp_path: Path, args: list[str]) -> None:
    key, cert = self_signed(tmp_path)
    other_key, _ = self_signed(tmp_path, "other")
    filled = [a.format(key=key, cert=cert, other_key=other_key) for a in args]
    proc = up(tmp_path / "home", free_port(), *filled)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        stop(proc)
    assert proc.returncode == 1, out.decode()
    assert b"--ssl-" in out and b"Traceback" not in out, out.decode()
