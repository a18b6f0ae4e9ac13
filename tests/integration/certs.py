"""Throwaway test PKI for the integration tests, made at run time.

Nothing here is a secret worth keeping: the keys live in a per-process temporary directory that
is removed when the interpreter exits.  The set covers the TLS cases the SIP stack must handle
(RFC 5922 §7 server identity, RFC 5246 chain checks):

* ``ca`` -- the test root every "good" certificate chains to;
* ``server`` -- ``localhost`` + ``127.0.0.1`` + ``::1`` signed by ``ca`` (the good case);
* ``wrong_host`` -- ``wrong.example`` signed by ``ca`` (hostname mismatch);
* ``unknown_ca`` -- ``localhost`` + ``127.0.0.1`` + ``::1`` signed by another, untrusted CA;
* ``sip_domain`` -- the SIP domain ``voip.test`` signed by ``ca`` (a registrar found via DNS
  SRV, RFC 3263, proves the AOR's domain: RFC 5922 §4.1);
* ``srv_target`` -- only the SRV target host ``kamailio.voip.test`` signed by ``ca`` (must be
  refused for AORs ``@voip.test``).
"""

from __future__ import annotations

import atexit
import datetime
import ipaddress
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class CertPair:
    """A PEM certificate file and its PEM private key file."""

    cert: str
    key: str


@dataclass(frozen=True)
class PKI:
    """Paths of the generated test PKI (all PEM files)."""

    directory: str
    ca: CertPair
    server: CertPair
    wrong_host: CertPair
    unknown_ca: CertPair
    unknown_ca_root: CertPair
    sip_domain: CertPair
    srv_target: CertPair

    @property
    def ca_cert(self) -> str:
        """The trust anchor file to give clients (``cafile``)."""
        return self.ca.cert


_lock = threading.Lock()
_cached: PKI | None = None


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "voiptwisted tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(
        now + datetime.timedelta(days=2)
    )


def _make_ca(common_name: str):
    key = _key()
    name = _name(common_name)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    cert = _validity(builder).sign(key, hashes.SHA256())
    return cert, key


def _make_leaf(common_name: str, sans: list[x509.GeneralName], ca_cert, ca_key):
    key = _key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    cert = _validity(builder).sign(ca_key, hashes.SHA256())
    return cert, key


def _write(directory: str, stem: str, cert, key) -> CertPair:
    cert_path = os.path.join(directory, stem + ".crt")
    key_path = os.path.join(directory, stem + ".key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    return CertPair(cert_path, key_path)


def _localhost_sans() -> list[x509.GeneralName]:
    return [
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]


#: The SIP domain of the DNS SRV tests and the host its SRV record points to.
SIP_DOMAIN = "voip.test"
SRV_TARGET = "kamailio.voip.test"


def make_pki(directory: str) -> PKI:
    """Generate a fresh test PKI into ``directory`` (which must exist) and return its paths."""
    ca_cert, ca_key = _make_ca("voiptwisted test CA")
    other_cert, other_key = _make_ca("voiptwisted UNTRUSTED CA")
    server = _make_leaf("localhost", _localhost_sans(), ca_cert, ca_key)
    wrong = _make_leaf("wrong.example", [x509.DNSName("wrong.example")], ca_cert, ca_key)
    unknown = _make_leaf("localhost", _localhost_sans(), other_cert, other_key)
    domain = _make_leaf(SIP_DOMAIN, [x509.DNSName(SIP_DOMAIN)], ca_cert, ca_key)
    target = _make_leaf(SRV_TARGET, [x509.DNSName(SRV_TARGET)], ca_cert, ca_key)
    return PKI(
        directory=directory,
        ca=_write(directory, "ca", ca_cert, ca_key),
        server=_write(directory, "server", *server),
        wrong_host=_write(directory, "wrong_host", *wrong),
        unknown_ca=_write(directory, "unknown_ca", *unknown),
        unknown_ca_root=_write(directory, "unknown_ca_root", other_cert, other_key),
        sip_domain=_write(directory, "sip_domain", *domain),
        srv_target=_write(directory, "srv_target", *target),
    )


def get_pki() -> PKI:
    """Return the per-process test PKI, generating it on first use.

    The directory is removed at interpreter exit.
    """
    global _cached
    with _lock:
        if _cached is None:
            directory = tempfile.mkdtemp(prefix="voiptwisted-pki-")
            atexit.register(shutil.rmtree, directory, True)
            _cached = make_pki(directory)
        return _cached
