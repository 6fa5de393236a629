"""The TLS certificate of a real HTTPS server (nginx), from the lab CA.

When the run has a lab CA (authentication: certificates, lab.pki) and the host holds a machine
certificate from it, nginx serves that very certificate (it carries serverAuth and the host's
addresses) and clients trust the run's lab CA. Otherwise a small web CA is made for the run with
the same `cryptography` package; its key is discarded at once. The server's private key goes
only to the run's secrets file.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_made: dict[tuple[int, str], tuple[str, str, str]] = {}  # (id(topology), host) -> (cert, key, ca)


def server_certificate(topology, host, pki=None, public_only: bool = False) -> tuple[str, str, str]:
    """(certificate PEM, private key PEM, CA certificate PEM) for `host`'s HTTPS server."""
    if pki is not None and host.name in pki.certs and host.name in pki.keys:
        return pki.certs[host.name], pki.keys[host.name], pki.ca_cert
    key = (id(topology), host.name)
    if key not in _made:
        _made[key] = _issue(topology.name, host)
    cert, private, ca = _made[key]
    return cert, ("" if public_only else private), ca


def forget(topology) -> None:
    """Drop the cached keys of a finished run."""
    for k in [k for k in _made if k[0] == id(topology)]:
        del _made[k]


def _issue(topology_name: str, host) -> tuple[str, str, str]:
    now = _dt.datetime.now(_dt.UTC)
    start, end = now - _dt.timedelta(hours=1), now + _dt.timedelta(days=2)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "IPsec policy lab"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"{topology_name} lab web CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host.name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(host.name)] + [x509.IPAddress(ipaddress.ip_address(str(a))) for a in host.addresses]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = lambda c: c.public_bytes(serialization.Encoding.PEM).decode()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return pem(cert), private, pem(ca)
