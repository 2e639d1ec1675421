"""The scheduler's TLS certificate: given as files, or a self-signed pair made on
the first start (``<home>/tls.crt`` and ``<home>/tls.key``, mode 0600) and kept."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from scheduler.transport.tls import fingerprint


class TlsSetupError(Exception):
    """A certificate or key that cannot be used, named in the message."""


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    #: SHA-256 of the certificate: what peers pin.
    fingerprint: str

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        return context


def load_or_create(home: Path, cert: Path | None, key: Path | None) -> Certificate:
    """The certificate to serve; raises :class:`TlsSetupError` naming the file."""
    if cert is None and key is None:
        cert, key = home / "tls.crt", home / "tls.key"
        if not cert.exists() or not key.exists():
            _self_signed(cert, key)
    elif cert is None or key is None:
        raise TlsSetupError("--tls-cert and --tls-key go together")
    try:
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        Certificate(cert, key, "").server_context()  # refuses a key that does not match
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise TlsSetupError(f"cannot use TLS certificate {cert} with key {key}: {exc}") from None
    return Certificate(cert, key, fingerprint(der))


def _self_signed(cert: Path, key: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"dfarm {socket.getfqdn()}")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .sign(private, hashes.SHA256())
    )
    pem_key = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for path, data in (
        (key, pem_key),
        (cert, certificate.public_bytes(serialization.Encoding.PEM)),
    ):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
