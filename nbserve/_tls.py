"""TLS for remote agents: a self-signed pair for the serving host, and the client's checks.

A client trusts an agent in one of three ways, never by skipping verification:
a pinned SHA-256 fingerprint (the usual case for a self-signed agent: the certificate that
answers must be exactly that one), a CA file (an organisation's CA; the host name is
checked too), or the system's trust store.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import ipaddress
import os
import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from .errors import AgentUnreachable, InvalidArgument, TLSVerificationFailed


def normalize_fingerprint(value: str) -> str:
    """``AB:CD:...`` or ``abcd...`` (SHA-256, 64 hex digits) as lower-case hex without colons."""
    digits = value.replace(":", "").replace(" ", "").lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise InvalidArgument(f"{value!r} is not a SHA-256 fingerprint",
                              hint="64 hex digits, with or without colons, as `nbserve agent init-tls` prints")
    return digits


def format_fingerprint(hex_digits: str) -> str:
    return ":".join(hex_digits[i:i + 2] for i in range(0, len(hex_digits), 2)).upper()


def fingerprint_of_pem(pem: str) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def make_self_signed(cert_path: Path, key_path: Path, hosts: list[str], *, days: int = 825) -> str:
    """Write a self-signed certificate for ``hosts`` (names or addresses) and its private key
    (mode 0600); return the certificate's SHA-256 fingerprint (hex)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hosts:
        raise InvalidArgument("name at least one host the certificate is for", hint="--host HOST (repeatable)")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0][:64]),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "nbserve agent")])
    now = _dt.datetime.now(_dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(minutes=5))
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def server_context(cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str]) -> ssl.SSLContext:
    """The agent's TLS settings (API and stable URLs): TLS 1.2 or later."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidArgument(f"cannot load the TLS certificate {cert_file} and key {key_file}: {exc}",
                              hint="make a pair with `nbserve agent init-tls`") from None
    return context


def pinned_context(pem: str) -> ssl.SSLContext:
    """Trust exactly the certificate ``pem`` (no host-name check: the pin is the identity)."""
    context = ssl.create_default_context(cadata=pem)
    context.check_hostname = False
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a pinned CA-issued leaf is its own anchor
    return context


def client_context(url: str, *, fingerprint: str | None = None, ca_file: str | None = None,
                   timeout: float = 10.0) -> ssl.SSLContext:
    """How a client verifies the agent at ``url``.

    With a fingerprint, the certificate the host presents now is fetched and compared; on a
    match, only that certificate is trusted for every later connection, so a different one
    (a renewed certificate, or someone in between) fails the handshake instead of passing.
    """
    if fingerprint is not None:
        expected = normalize_fingerprint(fingerprint)
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 443
        try:
            pem = ssl.get_server_certificate((host, port), timeout=timeout)
        except (OSError, ssl.SSLError) as exc:
            raise AgentUnreachable(f"cannot reach {host}:{port} over TLS: {exc}",
                                   hint="check the target's address and that its agent runs with --tls-cert") from None
        found = fingerprint_of_pem(pem)
        if found != expected:
            raise TLSVerificationFailed(
                f"the certificate of {host}:{port} has fingerprint {format_fingerprint(found)}, "
                f"not the pinned {format_fingerprint(expected)}; nothing was sent",
                hint="if the host's certificate was renewed, ask its admin for the new fingerprint and run "
                     "`nbserve target add NAME URL --fingerprint NEW ...` again; otherwise someone may be "
                     "in between",
            )
        return pinned_context(pem)
    if ca_file is not None:
        try:
            return ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidArgument(f"cannot read the CA file {ca_file}: {exc}") from None
    return ssl.create_default_context()


def local_addresses() -> list[str]:
    """Names a self-signed certificate for this host should cover by default."""
    found = ["localhost", "127.0.0.1", socket.gethostname()]
    try:
        found += sorted({info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)
                         if info[0] == socket.AF_INET})
    except OSError:
        pass
    return list(dict.fromkeys(found))
