"""The lab CA of one run: a CA certificate, a machine certificate per IPsec host, and a CRL.

Host side only (the guest never imports `cryptography`). Generated afresh for every run and
never written to the repository: the private keys travel to the executor in the run's secrets
file (0600, deleted once read), like the preshared key; the certificates and the CRL are public
and are kept in the report folder (`certs/`). ECDSA P-256 keeps generation to milliseconds.

What the topology says per IPsec host (`certificate:`):
- valid    a machine certificate from the lab CA (subject CN = host name, SAN = its addresses);
- revoked  the same, but listed in the CA's CRL, which every charon loads: peers refuse it;
- none     no machine certificate and no key: the host cannot authenticate IKE.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = _dt.timedelta(days=2)  # a run lasts seconds; the CRL must not go stale during one
BACKDATE = _dt.timedelta(hours=1)  # tolerate a guest clock slightly behind the host's


@dataclass(frozen=True)
class LabPki:
    """PEM texts. `keys` is secret; everything else is public."""

    ca_cert: str
    crl: str
    certs: dict[str, str]  # host -> machine certificate (valid and revoked hosts)
    keys: dict[str, str] = field(repr=False)  # host -> private key (SEC1 "EC PRIVATE KEY")
    revoked: tuple[str, ...] = ()
    serials: dict[str, int] = field(default_factory=dict)

    def public(self) -> dict:
        """What the plan may carry: nothing private."""
        return {"ca": self.ca_cert, "crl": self.crl, "certs": dict(self.certs)}

    def secret(self) -> dict:
        """What only the secrets file may carry."""
        return {"keys": dict(self.keys)}

    def secret_material(self) -> list[bytes]:
        """Every byte string that must never appear in a report: each key's PEM text, its
        base64 body lines, its DER encoding and its private scalar (raw and as hex)."""
        out: list[bytes] = []
        for pem in self.keys.values():
            key = serialization.load_pem_private_key(pem.encode(), password=None)
            scalar = key.private_numbers().private_value.to_bytes(32, "big")
            der = key.private_bytes(serialization.Encoding.DER,
                                    serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())
            body = [line for line in pem.splitlines() if line and not line.startswith("-----")]
            out += [pem.encode(), der, scalar, scalar.hex().encode(), *(b.encode() for b in body)]
        return out

    def write_public(self, folder: str | Path) -> dict[str, str]:
        """Write the CA certificate, the machine certificates and the CRL into `folder`/certs."""
        certs = Path(folder, "certs")
        certs.mkdir(parents=True, exist_ok=True)
        files = {"ca.pem": self.ca_cert, "crl.pem": self.crl}
        files.update({f"{host}.pem": pem for host, pem in sorted(self.certs.items())})
        for name, text in files.items():
            (certs / name).write_text(text)
        return {f"certs/{name}": f"certs/{name}" for name in files}


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    # SEC1 ("EC PRIVATE KEY"): what strongSwan's openssl plugin loads as type ECDSA.
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def _pem(obj) -> str:
    return obj.public_bytes(serialization.Encoding.PEM).decode()


def build_pki(topology, now: _dt.datetime | None = None) -> LabPki:
    """A CA for this topology and a certificate for every IPsec host whose `certificate` is
    valid or revoked; the CRL lists the revoked ones."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    start, end = now - BACKDATE, now + VALIDITY
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "IPsec policy lab"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"{topology.name} lab CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski)
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))

    certs, keys, serials, revoked = {}, {}, {}, []
    vips = {c.name: c.vip for c in getattr(topology, "clusters", ())}
    for host in topology.hosts:
        state = getattr(host, "certificate", "none")
        if not host.policy or state not in ("valid", "revoked"):
            continue
        key = _key()
        addresses = list(host.addresses) + ([vips[host.cluster]] if host.cluster in vips else [])
        serial = x509.random_serial_number()
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host.name)]))
                .issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(serial)
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address(str(a))) for a in addresses]), critical=False)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=False, crl_sign=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                # Windows machine certificates (the Computer template) carry both.
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH,
                                                      ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .add_extension(ca_aki, critical=False)
                .sign(ca_key, hashes.SHA256()))
        certs[host.name], keys[host.name], serials[host.name] = _pem(cert), _pem_key(key), serial
        if state == "revoked":
            revoked.append(host.name)

    crl = (x509.CertificateRevocationListBuilder()
           .issuer_name(ca_name).last_update(start).next_update(end)
           .add_extension(x509.CRLNumber(1), critical=False)
           # strongSwan finds the CRL of a CA by this key identifier.
           .add_extension(ca_aki, critical=False))
    for name in revoked:
        crl = crl.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serials[name]).revocation_date(start)
            .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False).build())
    crl = crl.sign(ca_key, hashes.SHA256())
    return LabPki(ca_cert=_pem(ca), crl=_pem(crl), certs=certs, keys=keys, revoked=tuple(revoked),
                  serials=serials)
