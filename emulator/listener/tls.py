"""TLS material for the emulator's HTTPS listener: a throwaway CA and a server certificate.

`generate_self_signed(directory, hostnames)` writes `ca.pem` (give it to clients as
`ca_trust_path`), `server.pem` and `server.key` (0600). Keys are ECDSA P-256: generating them
takes milliseconds, so every test module can have its own CA. `server_context()` builds the
listener's SSLContext; `channel_binding_hash()` gives the RFC 5929 `tls-server-end-point`
value NTLM clients bind to over HTTPS (requests_ntlm sends it, so the acceptor must check it).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "TlsFiles",
    "channel_binding_hash",
    "generate_self_signed",
    "server_context",
]

_CA_FILE = "ca.pem"
_CERT_FILE = "server.pem"
_KEY_FILE = "server.key"
_VALIDITY = dt.timedelta(days=30)
# Backdate notBefore so a client clock slightly behind ours still accepts the certificate.
_CLOCK_SKEW = dt.timedelta(hours=1)
_PRIVATE_FILE_MODE = 0o600


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the certificate chain the listener serves (`ca_cert` only when generated)."""

    cert_file: str
    key_file: str
    ca_cert_file: str | None = None


def _san_entries(hostnames: list[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(hostnames):  # keep order, drop duplicates
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _PRIVATE_FILE_MODE)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def generate_self_signed(directory: str | Path, hostnames: list[str]) -> TlsFiles:
    """Create a CA and a server certificate for `hostnames` (DNS names or IPs) in `directory`."""
    if not hostnames:
        raise ValueError("at least one hostname or IP address is needed for the certificate")
    folder = Path(directory)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sccm-refresh emulator test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(_san_entries(hostnames)), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path = folder / _CA_FILE
    cert_path = folder / _CERT_FILE
    key_path = folder / _KEY_FILE
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        key_path,
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return TlsFiles(cert_file=str(cert_path), key_file=str(key_path), ca_cert_file=str(ca_path))


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """The listener's TLS context (TLS 1.2+, the files' certificate and key)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.cert_file, files.key_file)
    return context


def channel_binding_hash(cert_file: str) -> bytes:
    """RFC 5929 4.1 `tls-server-end-point` hash of the first certificate in `cert_file`.

    The hash follows the certificate's signature algorithm, except MD5/SHA-1 become SHA-256,
    exactly as requests_ntlm computes it on the client side.
    """
    cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
    algorithm = cert.signature_hash_algorithm
    if algorithm is None or algorithm.name in ("md5", "sha1"):
        algorithm = hashes.SHA256()
    digest = hashes.Hash(algorithm)
    digest.update(cert.public_bytes(serialization.Encoding.DER))
    return digest.finalize()
