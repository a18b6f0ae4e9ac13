"""SRTP protect/unprotect (RFC 3711) for the keys SDES negotiated (RFC 4568).

All cryptography is done by libsrtp through ``pylibsrtp``; this module keys one
context per call from the :class:`~voiptwisted.sdp.CryptoAttribute` lines of the
offer/answer (their syntax lives in :mod:`voiptwisted.sdp`) and keeps per-call
counters.  ``pylibsrtp`` is imported by the first :class:`SRTPContext` (a call),
not when this module is, so a service that is only registered does not load it.
Keys never appear in ``repr`` or logs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING

from voiptwisted.sdp.types import CryptoAttribute, SDESError

if TYPE_CHECKING:
    import pylibsrtp
else:
    #: Bound to the module by :func:`_load_libsrtp` on the first SRTPContext.
    pylibsrtp = None

__all__ = ["SRTPContext"]


def _load_libsrtp() -> None:
    """Import ``pylibsrtp`` once, into this module's globals (kept for every later packet)."""
    global pylibsrtp
    if pylibsrtp is None:
        import pylibsrtp as module

        pylibsrtp = module


def _check_suites(local: CryptoAttribute, remote: CryptoAttribute) -> None:
    """One call's two directions use one crypto-suite (RFC 4568 §6.1: the answer's)."""
    if local.suite != remote.suite:
        raise SDESError("SRTP: both directions must use the same crypto-suite")


def _session(crypto: CryptoAttribute, ssrc_type: int) -> pylibsrtp.Session:
    """A libsrtp session for one direction of a call, keyed with *crypto*."""
    return pylibsrtp.Session(
        pylibsrtp.Policy(
            key=crypto.master, ssrc_type=ssrc_type, srtp_profile=crypto.crypto_suite.profile
        )
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
        self.suite = local.crypto_suite
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
        context.suite = local.crypto_suite
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
