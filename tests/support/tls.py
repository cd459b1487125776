"""A throw-away PKI for TLS tests: a CA, good and bad server certs, client certs.

EC P-256 keys keep generation in the milliseconds, so each test can have its own.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Validity starts in the past so clock skew between processes cannot make a
# fresh certificate "not yet valid".
_BACKDATE = dt.timedelta(days=1)
_LIFETIME = dt.timedelta(days=30)


@dataclass(frozen=True)
class Pki:
    """Paths of PEM files. Keys are unencrypted, mode 0600."""

    ca_cert: Path
    ca_key: Path
    # CN localhost, SAN DNS:localhost + IP:127.0.0.1, signed by ca.
    server_cert: Path
    server_key: Path
    # Signed by ca but SAN only DNS:wrong.example: hostname verification must fail.
    wrong_host_cert: Path
    wrong_host_key: Path
    # CN linewatch-client, clientAuth, signed by ca.
    client_cert: Path
    client_key: Path
    # An unrelated CA: trusting only this must reject the server; certs it
    # signed must be rejected by a broker trusting ca.
    wrong_ca_cert: Path
    wrong_ca_key: Path
    # CN linewatch-client, signed by wrong_ca.
    wrong_ca_client_cert: Path
    wrong_ca_client_key: Path


def make_pki(directory: Path) -> Pki:
    """Create every file of a :class:`Pki` in ``directory`` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _make_ca("linewatch test CA")
    wrong_ca_key, wrong_ca_cert = _make_ca("unrelated test CA")
    server_key, server_cert = _make_leaf(
        ca_key,
        ca_cert,
        "localhost",
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    wrong_host_key, wrong_host_cert = _make_leaf(
        ca_key,
        ca_cert,
        "wrong.example",
        sans=[x509.DNSName("wrong.example")],
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    )
    client_key, client_cert = _make_leaf(
        ca_key, ca_cert, "linewatch-client", sans=[], usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    wc_client_key, wc_client_cert = _make_leaf(
        wrong_ca_key, wrong_ca_cert, "linewatch-client", sans=[], usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )

    def write(name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
        cert_path = directory / f"{name}.crt"
        key_path = directory / f"{name}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_path.chmod(0o600)
        return cert_path, key_path

    ca = write("ca", ca_key, ca_cert)
    server = write("server", server_key, server_cert)
    wrong_host = write("wrong-host", wrong_host_key, wrong_host_cert)
    client = write("client", client_key, client_cert)
    wrong_ca = write("wrong-ca", wrong_ca_key, wrong_ca_cert)
    wc_client = write("wrong-ca-client", wc_client_key, wc_client_cert)
    return Pki(
        ca_cert=ca[0], ca_key=ca[1],
        server_cert=server[0], server_key=server[1],
        wrong_host_cert=wrong_host[0], wrong_host_key=wrong_host[1],
        client_cert=client[0], client_key=client[1],
        wrong_ca_cert=wrong_ca[0], wrong_ca_key=wrong_ca[1],
        wrong_ca_client_cert=wc_client[0], wrong_ca_client_key=wc_client[1],
    )  # fmt: skip


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.timezone.utc)
    return now - _BACKDATE, now + _LIFETIME


def _make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    common_name: str,
    *,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())
