"""A local CA and a serving certificate, made with ``cryptography``.

``podgate serve`` uses it to run out of the box over TLS; ``podgate certs`` writes the same pair
for clusters without cert-manager. Files are written atomically (write, then rename), key files
with mode 0600, so a server reading them never sees half a certificate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# the chart's Service (release name podgate) in the namespace the docs and the chart install into
DEFAULT_SERVICE = "podgate"
DEFAULT_NAMESPACE = "podgate-system"
CA_DAYS = 3650
SERVING_DAYS = 365
RENEW_BEFORE = dt.timedelta(days=30)


@dataclass(frozen=True)
class CertPaths:
    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def cert(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def key(self) -> Path:
        return self.directory / "tls.key"

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.ca_cert, self.ca_key, self.cert, self.key)


def service_names(service: str, namespace: str) -> list[str]:
    """The DNS names the API server may use for a Service."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc",
            f"{service}.{namespace}.svc.cluster.local"]


DEFAULT_NAMES = ("localhost", "127.0.0.1", *service_names(DEFAULT_SERVICE, DEFAULT_NAMESPACE))


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_ca(common_name: str = "podgate local CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_serving_cert(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, names: list[str],
                      days: int = SERVING_DAYS) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                     crl_sign=False, content_commitment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def write_certificates(directory: str | Path, names: list[str] | None = None) -> CertPaths:
    """Make a new CA and a serving certificate for ``names`` in ``directory``."""
    paths = CertPaths(Path(directory))
    paths.directory.mkdir(parents=True, exist_ok=True)
    names = list(names or DEFAULT_NAMES)
    ca_cert, ca_key = make_ca()
    cert, key = make_serving_cert(ca_cert, ca_key, names)
    _write(paths.ca_key, _pem_key(ca_key), private=True)
    _write(paths.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    # key before certificate: a reader that sees the new certificate also finds its key
    _write(paths.key, _pem_key(key), private=True)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM))
    return paths


def usable(paths: CertPaths, names: list[str]) -> bool:
    """An existing serving certificate that covers ``names`` and is not about to expire."""
    try:
        cert = x509.load_pem_x509_certificate(paths.cert.read_bytes())
        paths.key.stat()
    except (OSError, ValueError):
        return False
    if cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc) < RENEW_BEFORE:
        return False
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have = {str(v) for v in sans.get_values_for_type(x509.DNSName)}
    have |= {str(v) for v in sans.get_values_for_type(x509.IPAddress)}
    return set(names) <= have


def ensure_self_signed(directory: str | Path, names: list[str] | None = None) -> CertPaths:
    """Reuse the certificate in ``directory`` if it is still good, else make a new one."""
    paths = CertPaths(Path(directory))
    wanted = list(names or DEFAULT_NAMES)
    if not usable(paths, wanted):
        write_certificates(directory, wanted)
    return paths
