"""SRTP with SDES key exchange: ``a=crypto`` (RFC 4568) and protect/unprotect (RFC 3711).

All cryptography is done by libsrtp through ``pylibsrtp``; this module only
parses and generates the SDP key material and keeps per-call counters.
``pylibsrtp`` is imported by the first :class:`SRTPContext` (a call), not when
this module is, so a service that is only registered does not load it.  Keys
never appear in ``repr``, ``str`` of errors or logs: use :func:`redact_sdp`
before logging an SDP body.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pylibsrtp
else:
    #: Bound to the module by :func:`_load_libsrtp` on the first SRTPContext.
    pylibsrtp = None

__all__ = [
    "SUITES",
    "CryptoAttribute",
    "CryptoSuite",
    "SDESError",
    "SRTPContext",
    "redact_sdp",
]


class SDESError(ValueError):
    """An ``a=crypto`` line is malformed or asks for something we do not support.

    The message names the problem but never contains key material.
    """


@dataclass(frozen=True)
class CryptoSuite:
    """An SRTP crypto-suite (RFC 4568 §6.2, RFC 7714 §12) and its libsrtp profile."""

    name: str
    profile: int
    key_length: int
    salt_length: int
    #: Maximum SRTP master key lifetime in packets (RFC 4568 §6.2.1: 2^48).
    max_lifetime: int = 2**48

    @property
    def master_length(self) -> int:
        """Length of the ``inline:`` key||salt value once decoded."""
        return self.key_length + self.salt_length


#: Suites we accept, in our order of preference for offers.  ``profile`` is libsrtp's
#: ``srtp_profile_t``, which uses the IANA DTLS-SRTP protection profile numbers
#: (RFC 5764 §4.1.2, RFC 7714 §14.2): 1, 2 and 7 (pylibsrtp's ``Policy.SRTP_PROFILE_*``).
SUITES: dict[str, CryptoSuite] = {
    s.name: s
    for s in (
        CryptoSuite("AES_CM_128_HMAC_SHA1_80", 1, 16, 14),
        CryptoSuite("AES_CM_128_HMAC_SHA1_32", 2, 16, 14),
        CryptoSuite("AEAD_AES_128_GCM", 7, 16, 12),
    )
}


def _load_libsrtp() -> None:
    """Import ``pylibsrtp`` once, into this module's globals (kept for every later packet)."""
    global pylibsrtp
    if pylibsrtp is None:
        import pylibsrtp as module

        pylibsrtp = module

#: Session parameters (RFC 4568 §6.3) that we can honour; WSH is only a hint.
_HARMLESS_SESSION_PARAMS = ("WSH=",)
_TAG_RE = re.compile(r"[0-9]{1,9}\Z")
_LIFETIME_RE = re.compile(r"(?:2\^([0-9]{1,3})|([0-9]{1,20}))\Z")
_MKI_RE = re.compile(r"[0-9]{1,10}:[0-9]{1,3}\Z")


def _parse_lifetime(text: str, suite: CryptoSuite) -> int:
    match = _LIFETIME_RE.match(text)
    if match is None:
        raise SDESError("a=crypto: malformed key lifetime")
    value = 2 ** int(match.group(1)) if match.group(1) else int(match.group(2))
    if value <= 0 or value > suite.max_lifetime:
        raise SDESError(f"a=crypto: key lifetime outside 1..2^48 for {suite.name}")
    return value


@dataclass(frozen=True)
class CryptoAttribute:
    """One ``a=crypto`` line: ``tag suite inline:key||salt[|lifetime]`` (RFC 4568 §9.1).

    MKI and multiple keys per line are refused with :class:`SDESError`
    (libsrtp through pylibsrtp cannot select keys by MKI).
    """

    tag: int
    suite: CryptoSuite
    master: bytes = field(repr=False)
    lifetime: int | None = None

    def __repr__(self) -> str:
        return f"<CryptoAttribute tag={self.tag} suite={self.suite.name} key=<redacted>>"

    @classmethod
    def generate(cls, tag: int = 1, suite: str = "AES_CM_128_HMAC_SHA1_80") -> CryptoAttribute:
        """A fresh random master key and salt (RFC 4568 §6.1: keys MUST be random)."""
        spec = SUITES[suite]
        return cls(tag=tag, suite=spec, master=secrets.token_bytes(spec.master_length))

    @classmethod
    def parse(cls, value: str) -> CryptoAttribute:
        """Parse the value of an ``a=crypto`` attribute (without ``crypto:``).

        Raises :class:`SDESError` for malformed lines, unknown suites, MKI,
        multiple keys and unsupported session parameters (RFC 4568 §6.3).
        """
        if not isinstance(value, str) or len(value) > 1024:
            raise SDESError("a=crypto: value missing or too long")
        parts = value.split()
        if len(parts) < 3:
            raise SDESError("a=crypto: expected 'tag suite key-params'")
        tag_text, suite_name, key_params, *session_params = parts
        if not _TAG_RE.match(tag_text):
            raise SDESError("a=crypto: tag must be 1-9 digits")
        suite = SUITES.get(suite_name)
        if suite is None:
            raise SDESError(f"a=crypto: unsupported crypto-suite {suite_name[:40]!r}")
        for param in session_params:
            if not param.startswith(_HARMLESS_SESSION_PARAMS):
                raise SDESError(f"a=crypto: unsupported session parameter {param[:20]!r}")
        if ";" in key_params:
            raise SDESError("a=crypto: multiple master keys (needs MKI) are not supported")
        if not key_params.startswith("inline:"):
            raise SDESError("a=crypto: only the 'inline:' key method is supported")
        key_info, *extras = key_params[len("inline:") :].split("|")
        try:
            master = base64.b64decode(key_info, validate=True)
        except (binascii.Error, ValueError):
            raise SDESError("a=crypto: key is not valid base64") from None
        if len(master) != suite.master_length:
            raise SDESError(
                f"a=crypto: {suite.name} needs {suite.master_length} bytes of key||salt,"
                f" got {len(master)}"
            )
        lifetime = None
        if len(extras) > 2:
            raise SDESError("a=crypto: too many '|' fields in key parameters")
        for extra in extras:
            if _MKI_RE.match(extra):
                raise SDESError("a=crypto: MKI is not supported")
            if lifetime is not None:
                raise SDESError("a=crypto: lifetime given twice")
            lifetime = _parse_lifetime(extra, suite)
        return cls(tag=int(tag_text), suite=suite, master=master, lifetime=lifetime)

    def to_sdp(self) -> str:
        """The attribute value, ready for ``a=crypto:`` (contains the key: never log it)."""
        key = base64.b64encode(self.master).decode("ascii")
        lifetime = f"|{self.lifetime}" if self.lifetime is not None else ""
        return f"{self.tag} {self.suite.name} inline:{key}{lifetime}"


_INLINE_RE = re.compile(rb"inline:[A-Za-z0-9+/=]*")


def redact_sdp(data: bytes) -> bytes:
    """Return *data* with every ``inline:`` key replaced, for logging (issue 5 item 4)."""
    return _INLINE_RE.sub(b"inline:<redacted>", data)


def _check_suites(local: CryptoAttribute, remote: CryptoAttribute) -> None:
    """One call's two directions use one crypto-suite (RFC 4568 §6.1: the answer's)."""
    if local.suite != remote.suite:
        raise SDESError("SRTP: both directions must use the same crypto-suite")


def _session(crypto: CryptoAttribute, ssrc_type: int) -> pylibsrtp.Session:
    """A libsrtp session for one direction of a call, keyed with *crypto*."""
    return pylibsrtp.Session(
        pylibsrtp.Policy(key=crypto.master, ssrc_type=ssrc_type, srtp_profile=crypto.suite.profile)
    )


class SRTPContext:
    """SRTP/SRTCP for one call: our key protects, the peer's key unprotects (RFC 3711 §3.3).

    Replay protection is libsrtp's (RFC 3711 §3.3.2, 128-packet window).  Packets
    failing authentication or the replay check are dropped (``None``) and counted.

    The per-packet RTP calls are pylibsrtp's own bound methods (:attr:`protect`,
    :attr:`unprotect_or_raise`), so the media path pays no wrapper call: a caller of
    :attr:`unprotect_or_raise` catches :attr:`errors` and passes them to
    :meth:`count_failure`, which :meth:`unprotect` does for everyone else.
    """

    #: Encrypt and authenticate an RTP packet (``bytes`` only): libsrtp's protect.
    protect: Callable[[bytes], bytes]
    #: Verify and decrypt an SRTP packet (``bytes`` only); raises one of :attr:`errors`.
    unprotect_or_raise: Callable[[bytes], bytes]
    #: What the unprotect calls raise for a packet that must be dropped: libsrtp's
    #: failures, and ``ValueError`` for a datagram longer than pylibsrtp's buffer.
    errors: tuple[type[Exception], ...]

    def __init__(self, local: CryptoAttribute, remote: CryptoAttribute) -> None:
        _check_suites(local, remote)
        self.suite = local.suite
        _load_libsrtp()
        self._local = (local.suite, local.master)
        self._remote = (remote.suite, remote.master)
        self._tx = _session(local, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        self._rx = _session(remote, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        self._bind()
        self.errors = (pylibsrtp.Error, ValueError)
        self.auth_failures = 0
        self.replays = 0

    def _bind(self) -> None:
        self.protect = self._tx.protect
        self.unprotect_or_raise = self._rx.unprotect

    def rekeyed(self, local: CryptoAttribute, remote: CryptoAttribute) -> SRTPContext:
        """This call's context after a new offer/answer (re-INVITE, RFC 4568 §7.1.4).

        Each direction is its own cryptographic context (RFC 3711 §3.2.3): one whose
        suite and master key did not change carries on (its rollover counter and
        replay window with it: restarted, the index would begin again under the same
        key, reusing keystream, and decryption would fail once the peer's sequence had
        wrapped); a re-keyed direction starts afresh.  Returns ``self`` when neither
        direction changed; the drop counters carry over either way.
        """
        _check_suites(local, remote)
        same_tx = (local.suite, local.master) == self._local
        same_rx = (remote.suite, remote.master) == self._remote
        if same_tx and same_rx:
            return self
        context = copy.copy(self)
        context.suite = local.suite
        if not same_tx:
            context._local = (local.suite, local.master)
            context._tx = _session(local, pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        if not same_rx:
            context._remote = (remote.suite, remote.master)
            context._rx = _session(remote, pylibsrtp.Policy.SSRC_ANY_INBOUND)
        context._bind()
        return context

    def __repr__(self) -> str:
        return (
            f"<SRTPContext {self.suite.name} auth_failures={self.auth_failures}"
            f" replays={self.replays}>"
        )

    def protect_rtcp(self, packet: bytes) -> bytes:
        """Encrypt and authenticate an RTCP compound packet (SRTCP, RFC 3711 §3.4)."""
        return self._tx.protect_rtcp(packet)

    def unprotect(self, packet: bytes) -> bytes | None:
        """Verify and decrypt an SRTP packet, or return None (and count) if it fails."""
        try:
            return self.unprotect_or_raise(packet)
        except self.errors as exc:
            self.count_failure(exc)
            return None

    def unprotect_rtcp(self, packet: bytes) -> bytes | None:
        """Verify and decrypt an SRTCP packet, or return None (and count) if it fails."""
        try:
            return self._rx.unprotect_rtcp(packet)
        except self.errors as exc:
            self.count_failure(exc)
            return None

    def count_failure(self, exc: Exception) -> None:
        """Count a dropped packet: a replay (RFC 3711 §3.3.2), or one that failed (or,
        being too long for libsrtp, could not be given) authentication."""
        if "replay" in str(exc):
            self.replays += 1
        else:
            self.auth_failures += 1
