"""Certificates made with ``cryptography`` for tests and benchmarks: a CA, a server
certificate for 127.0.0.1, client certificates whose CN names an identity."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))


def _issue(cn: str, issuer: x509.Name, issuer_key: ec.EllipticCurvePrivateKey | None,
           ca: bool = False, ip: str | None = None
           ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (x509.CertificateBuilder().subject_name(subject)
               .issuer_name(subject if issuer_key is None else issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ip:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256()), key


@dataclass
class Pki:
    directory: Path

    def __post_init__(self) -> None:
        self.ca_cert, self.ca_key = _issue("test syslog CA", x509.Name([]), None, ca=True)
        _write(self.directory / "ca", self.ca_cert, self.ca_key)
        cert, key = _issue("127.0.0.1", self.ca_cert.subject, self.ca_key, ip="127.0.0.1")
        _write(self.directory / "server", cert, key)

    @property
    def ca(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def server(self) -> tuple[Path, Path]:
        return self.directory / "server.crt", self.directory / "server.key"

    def client(self, cn: str, *, self_signed: bool = False) -> tuple[Path, Path]:
        cert, key = _issue(cn, self.ca_cert.subject, None if self_signed else self.ca_key)
        base = self.directory / f"client-{cn}{'-self' if self_signed else ''}"
        _write(base, cert, key)
        return base.with_suffix(".crt"), base.with_suffix(".key")

    def client_context(self, cn: str, *, self_signed: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca))
        context.load_cert_chain(*map(str, self.client(cn, self_signed=self_signed)))
        return context
