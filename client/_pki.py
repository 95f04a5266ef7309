"""`schedctl tls init`: a throw-away PKI for development and tests (a CA, a certificate per node, a
client and a worker certificate), made with the `cryptography` package. Production brings its own PKI
(docs/security.md says what each certificate needs).

Keys are ECDSA P-256 (every TLS stack gRPC uses accepts them); node certificates carry the node's
addresses as subject alternative names and serve both as server and as client certificates (the clock
probe presents one when the cluster requires client certificates). Private keys are written 0600.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cronraft.errors import InvalidArgument

__all__ = ["Leaf", "init_pki", "nodes_from_configs", "parse_node_flag"]

CA_DAYS = 3650
LEAF_DAYS = 825


@dataclass(frozen=True)
class Leaf:
    name: str  # file stem and common name
    hosts: tuple[str, ...] = ()  # DNS names or IP addresses (subject alternative names)
    server: bool = False  # serverAuth as well as clientAuth


def parse_node_flag(text: str) -> Leaf:
    """`--node ID=HOST[,HOST...]`."""
    name, sep, hosts = text.partition("=")
    if not sep or not name or not hosts:
        raise InvalidArgument("--node", f"{text!r}: expected ID=HOST[,HOST...], e.g. node1=10.0.0.1")
    return Leaf(name, tuple(h.strip() for h in hosts.split(",") if h.strip()), server=True)


def _host(address: str) -> str:
    host = address.rpartition(":")[0]
    return host[1:-1] if host.startswith("[") else host


def nodes_from_configs(paths: Sequence[str]) -> list[Leaf]:
    """One node certificate per member of the given schedd config files (their gRPC hosts as SANs)."""
    hosts: dict[str, list[str]] = {}
    for path in paths:
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise InvalidArgument("--config", f"cannot read {path}: {e}") from None
        for member in doc.get("cluster", {}).get("members", []):
            if not isinstance(member, dict) or "id" not in member or "grpc_address" not in member:
                raise InvalidArgument("--config", f"{path}: a cluster.members entry without id/grpc_address")
            names = hosts.setdefault(str(member["id"]), [])
            host = _host(str(member["grpc_address"]))
            if host not in names:
                names.append(host)
    return [Leaf(name, tuple(h), server=True) for name, h in hosts.items()]


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Cronraft development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _write(path: Path, data: bytes, private: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def init_pki(directory: Path, leaves: Sequence[Leaf], *, force: bool = False) -> list[Path]:
    """Write ca.pem (+ ca-key.pem) and NAME.pem + NAME-key.pem per leaf; return the paths written.
    Refuses to overwrite unless `force`."""
    names = [leaf.name for leaf in leaves]
    if len(set(names)) != len(names) or "ca" in names:
        raise InvalidArgument("--node", f"certificate names must be distinct and not 'ca': {names}")
    targets = [directory / "ca.pem", directory / "ca-key.pem"]
    for leaf in leaves:
        targets += [directory / f"{leaf.name}.pem", directory / f"{leaf.name}-key.pem"]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise InvalidArgument("DIR", f"{existing[0]} exists; pass --force to replace the whole set")
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    now = datetime.now(UTC) - timedelta(minutes=5)  # a little slack for clocks behind ours
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("Cronraft development CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=CA_DAYS))
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory / "ca-key.pem", _key_pem(ca_key), private=True)
    _write(directory / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM), private=False)
    for leaf in leaves:
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        if leaf.server:
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(leaf.name))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=LEAF_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        # Every certificate names its identity as a SAN too (the CN alone is ignored by modern
        # verifiers); a node's also lists its addresses, which clients check against the one they dial.
        builder = builder.add_extension(_san([leaf.name, *leaf.hosts]), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write(directory / f"{leaf.name}-key.pem", _key_pem(key), private=True)
        _write(directory / f"{leaf.name}.pem", cert.public_bytes(serialization.Encoding.PEM), private=False)
    return targets
