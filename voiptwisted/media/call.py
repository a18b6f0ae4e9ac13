"""The media half of a call, as the dialogs use it: negotiate SDP, own the RTP socket.

``CallMedia.answer_offer`` (inbound INVITE) and ``CallMedia.create_offer`` +
``accept_answer`` (outbound) negotiate per RFC 3264 and bind the call's UDP
ports; ``start(session)`` attaches the application's ``ISession`` and joins
the shared pacer; ``stop()`` ends it and releases the ports.

The SDP ``c=`` address is, in order: the ``public_host`` argument (the
address the registrar saw, from Via ``received``), ``MediaConfig.public_host``,
the STUN mapped address (``*_deferred`` variants, at most 500 ms), else the
local address of the signalling connection.

:mod:`voiptwisted.sdp.negotiation` is imported on the first call, and numpy with
the G.711 tables by the first RTP stream, not with this module: a service builds
its ``MediaConfig`` at start-up and should stay light until a call arrives (issue 6).
Offer/answer gets ``MediaConfig.codecs`` as the :mod:`voiptwisted.codecs` registry
entries, and the RTP stream takes its coders from the negotiated one.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import socket
from types import ModuleType
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger

from voiptwisted.codecs import DEFAULT_CODECS, Codec, lookup, usable
from voiptwisted.media.inactivity import InactivityTimer
from voiptwisted.rtp.latch import PROBATION, RELATCH_AFTER
from voiptwisted.rtp.protocol import MediaStats, PortAllocator, RealtimeTransportProtocol
from voiptwisted.rtp.srtp import SRTPContext
from voiptwisted.sdp import (
    Attribute,
    CryptoAttribute,
    SDPParseError,
    SessionDescription,
    redact_sdp,
)
from voiptwisted.sdp.policy import SRTP_POLICIES, srtp_policy
from voiptwisted.sip.session_timer import MAX_SESSION_EXPIRES, MIN_SE, SESSION_EXPIRES

if TYPE_CHECKING:
    from voiptwisted.sdp.negotiation import NegotiatedMedia, NegotiationFailed, SRTPParams

__all__ = [
    "HOLD_TIMEOUT",
    "RTP_TIMEOUT",
    "SRTP_POLICIES",
    "CallMedia",
    "MediaConfig",
    "NegotiationFailed",
    "srtp_policy",
]

#: Hard bound on STUN discovery during call setup (issue 4 item 8).
STUN_TIMEOUT = 0.5
#: SDP bodies larger than this are refused before parsing.
MAX_SDP = 64 * 1024
#: Default seconds without RTP or RTCP after which a call is hung up (issue 17 item 2).
RTP_TIMEOUT = 60.0
#: Default of the same limit for a call on hold (0: none; a held call may be silent).
HOLD_TIMEOUT = 0.0
#: Our stream directions in which the far end is not expected to send us RTP: it put us
#: on hold (we are recvonly/inactive) or we put it on hold (sendonly).
_ON_HOLD = frozenset(("recvonly", "sendonly", "inactive"))


def _negotiation() -> ModuleType:
    """:mod:`voiptwisted.sdp.negotiation`, imported by the first call that needs it."""
    from voiptwisted.sdp import negotiation

    return negotiation


def __getattr__(name: str) -> Any:
    """PEP 562: ``NegotiationFailed`` is re-exported without importing negotiation early."""
    if name == "NegotiationFailed":
        return _negotiation().NegotiationFailed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass
class MediaConfig:
    """Media settings of a service: ports, codec preference, SRTP policy, NAT help, limits.

    ``rtp_timeout`` ends a call (BYE, sockets released) after that many seconds without
    RTP or RTCP from the peer; ``rtp_hold_timeout`` does the same for a call on hold
    (our direction not ``sendrecv``).  0 turns either off.  ``relatch_after`` (seconds
    of silence) and ``probation`` (packets in sequence) tune RTP source validation
    (:class:`~voiptwisted.rtp.latch.SourceLatch`).  ``session_expires`` is the session
    interval (RFC 4028) calls ask for and the longest they accept, at least 90 s: the
    refresher refreshes the call at half of it, the other side hangs up when it is not.
    """

    port_range: tuple[int, int] = (10000, 20000)
    #: Registered codec names (``voiptwisted.codecs``) offered and accepted, in our order of
    #: preference; an answer takes the offerer's first one we have (RFC 3264 §6.1).
    codecs: tuple[str, ...] = DEFAULT_CODECS
    #: "required", "optional" or "off"; left out: "optional", but "required" for calls
    #: to or from a ``sips:`` URI (:func:`srtp_policy`).  Given explicitly as "off" or
    #: "optional", a call or account with a ``sips:`` URI is refused with ValueError.
    srtp: str | None = None
    public_host: str | None = None
    stun_server: Any = None
    #: The reactor calls bind RTP on and time against (``IReactorUDP``, ``IReactorTime``);
    #: None: the one of the UA this config is given to.
    reactor: Any = None
    pacer: Any = None
    #: Interface the RTP sockets bind to; None: the local_host given per call when it
    #: is an address of this machine, else the wildcard of its family.
    bind_host: str | None = None
    rtp_timeout: float = RTP_TIMEOUT
    rtp_hold_timeout: float = HOLD_TIMEOUT
    relatch_after: float = RELATCH_AFTER
    probation: int = PROBATION
    session_expires: int = SESSION_EXPIRES
    allocator: PortAllocator = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        #: True when ``srtp`` was given, False when it is the default.
        self.srtp_explicit = self.srtp is not None
        self.srtp = srtp_policy(self.srtp)
        for name in ("rtp_timeout", "rtp_hold_timeout", "relatch_after"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be 0 or more seconds")
        if self.probation < 1:
            raise ValueError("probation must be at least 1 packet")
        if not MIN_SE <= self.session_expires <= MAX_SESSION_EXPIRES:
            raise ValueError(
                f"session_expires must be {MIN_SE} to {MAX_SESSION_EXPIRES} seconds (RFC 4028)"
            )
        # A default codec whose system library is missing is left out; one named is an error.
        self.codecs = usable(self.codecs, explicit=self.codecs is not DEFAULT_CODECS)
        if not lookup(self.codecs):
            raise ValueError("codecs must name at least one codec")
        self.allocator = PortAllocator(self.port_range)

    def get_reactor(self) -> Any:
        """The reactor calls bind their RTP on (``IReactorUDP``, ``IReactorTime``).

        The UA fills it in from its own when it was left out; a MediaConfig used on its
        own must be given one.
        """
        if self.reactor is None:
            raise RuntimeError(
                "MediaConfig has no reactor: pass MediaConfig(reactor=...) or use it through "
                "a SessionInitiationProtocol/VoIPService, which gives it theirs"
            )
        return self.reactor


def _bind_address(host: str) -> str:
    """*host* if this machine can bind it; else 0.0.0.0 / :: (it is a public/NAT address)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        return host
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.bind((host, 0))
    except OSError:
        return "::" if family == socket.AF_INET6 else "0.0.0.0"  # noqa: S104
    finally:
        probe.close()
    return host


def _parse(sdp: bytes) -> SessionDescription:
    if len(sdp) > MAX_SDP:
        raise _negotiation().NegotiationFailed(488, "SDP too large")
    try:
        return SessionDescription.parse(sdp)
    except SDPParseError as exc:
        raise _negotiation().NegotiationFailed(488, f"malformed SDP: {exc}") from None


def _same_keys(new: SRTPParams, old: SRTPParams | None) -> bool:
    """Both sides keep suite and master key (tags may differ): the SRTP context carries on."""
    return (
        old is not None
        and new.local.suite == old.local.suite
        and new.local.master == old.local.master
        and new.remote.master == old.remote.master
    )


class CallMedia:
    """One call's media: the negotiated parameters, the RTP protocol and its ports."""

    log = Logger()

    def __init__(self, config: MediaConfig, local_host: str, srtp: str | None = None) -> None:
        """*srtp* overrides ``config.srtp`` for this call (``"required"`` for ``sips:``)."""
        if srtp is not None and srtp not in SRTP_POLICIES:
            raise ValueError("srtp must be 'required', 'optional' or 'off'")
        self.config = config
        #: The SRTP policy of this call.
        self.srtp: str = srtp or config.srtp or "optional"
        self.local_host = local_host
        self.reactor = config.get_reactor()
        self.rtp = RealtimeTransportProtocol(
            reactor=self.reactor, pacer=config.pacer, stun_server=config.stun_server,
            probation=getattr(config, "probation", PROBATION),
            relatch_after=getattr(config, "relatch_after", RELATCH_AFTER),
        )
        self.inactivity = InactivityTimer(
            self.reactor, lambda: self.rtp.last_activity, self._timeout, self._inactive
        )
        #: Why the media stopped, once it has (see :meth:`stop`).
        self.stop_reason: str | None = None
        bind_host = config.bind_host or _bind_address(local_host)
        self.local_port = config.allocator.bind(self.reactor, self.rtp, bind_host)
        self.advertised_host = local_host
        self.advertised_port = self.local_port
        self.local_sdp = b""
        self.negotiated: NegotiatedMedia | None = None
        self.session: Any = None
        self._offer: SessionDescription | None = None
        self._offered_crypto: dict[int, CryptoAttribute] = {}
        self._started = False
        self._stopped = False

    def __repr__(self) -> str:
        return f"<CallMedia port={self.local_port} negotiated={self.negotiated is not None}>"

    # construction --------------------------------------------------------------------
    @classmethod
    def answer_offer(
        cls, config: MediaConfig, offer_sdp: bytes, local_host: str, *,
        public_host: str | None = None, srtp: str | None = None,
    ) -> CallMedia:
        """Negotiate the answer to *offer_sdp* (RFC 3264 §6) and bind the RTP port.

        ``local_sdp`` is the answer.  Raises :class:`NegotiationFailed` (488)
        with the port already released when nothing is acceptable.  *srtp*
        overrides the config's SRTP policy for this call.
        """
        offer = _parse(offer_sdp)
        media = cls(config, local_host, srtp)
        media._advertise(public_host)
        try:
            media._answer(offer)
        except BaseException:
            media.stop()
            raise
        return media

    @classmethod
    def create_offer(
        cls, config: MediaConfig, local_host: str, *, secure: bool | None = None,
        public_host: str | None = None, srtp: str | None = None,
    ) -> CallMedia:
        """Bind the RTP port and build our offer (``local_sdp``).

        *secure* None follows the policy: RTP/SAVP unless ``srtp="off"``.
        ``secure=False`` with policy ``required`` raises NegotiationFailed.
        *srtp* overrides the config's SRTP policy for this call.
        """
        media = cls(config, local_host, srtp)
        media._advertise(public_host)
        try:
            media._make_offer(secure)
        except BaseException:
            media.stop()
            raise
        return media

    @classmethod
    def answer_offer_deferred(
        cls, config: MediaConfig, offer_sdp: bytes, local_host: str, *,
        public_host: str | None = None, srtp: str | None = None,
    ) -> defer.Deferred[CallMedia]:
        """Like :meth:`answer_offer`, after STUN discovery when ``config.stun_server`` is set."""
        try:
            offer = _parse(offer_sdp)
        except _negotiation().NegotiationFailed as exc:
            return defer.fail(exc)
        media = cls(config, local_host, srtp)
        d = media._discover(public_host)
        d.addCallback(lambda _: media._answer(offer))
        d.addCallbacks(lambda _: media, media._fail)
        return d

    @classmethod
    def create_offer_deferred(
        cls, config: MediaConfig, local_host: str, *, secure: bool | None = None,
        public_host: str | None = None, srtp: str | None = None,
    ) -> defer.Deferred[CallMedia]:
        """Like :meth:`create_offer`, after STUN discovery when ``config.stun_server`` is set."""
        media = cls(config, local_host, srtp)
        d = media._discover(public_host)
        d.addCallback(lambda _: media._make_offer(secure))
        d.addCallbacks(lambda _: media, media._fail)
        return d

    def _fail(self, failure: Any) -> Any:
        self.stop()
        return failure

    def _advertise(self, public_host: str | None) -> None:
        host = public_host or self.config.public_host
        if host:
            self.advertised_host = host

    def _discover(self, public_host: str | None) -> defer.Deferred[None]:
        """STUN Binding on the RTP socket (RFC 5389), bounded by STUN_TIMEOUT."""
        self._advertise(public_host)
        server = self.config.stun_server
        if public_host or self.config.public_host or server is None or self.rtp.stun is None:
            return defer.succeed(None)
        self.rtp.stun.timeout = STUN_TIMEOUT
        d = self.rtp.stun.request((server[0], server[1]))

        def found(mapped: Any) -> None:
            self.advertised_host = str(mapped.host)
            self.advertised_port = int(mapped.port)

        def failed(failure: Any) -> None:
            self.log.warn("STUN failed ({error}); advertising {host}",
                          error=failure.getErrorMessage(), host=self.advertised_host)

        d.addCallbacks(found, failed)
        return d

    # negotiation ---------------------------------------------------------------------
    def _codecs(self) -> tuple[Codec, ...]:
        """Our codecs, in preference order, as registry entries (ValueError if unknown)."""
        return lookup(self.config.codecs)

    def _answer(self, offer: SessionDescription) -> None:
        answer, negotiated = _negotiation().answer_for(
            offer,
            local_host=self.advertised_host,
            port=self.advertised_port,
            codecs=self._codecs(),
            srtp_policy=self.srtp,
        )
        self.local_sdp = bytes(answer)
        self._apply(negotiated)

    def reanswer(self, offer_sdp: bytes) -> bytes:
        """Answer a new offer inside the call (re-INVITE, RFC 3264 §8) and apply it.

        Same port, codecs by our preference, same SRTP policy.  Our SRTP key is
        kept while the offer keeps the suite and the peer's key, so the SRTP
        context (and its rollover counter) carries on; when the peer re-keys or
        changes the suite we answer with a fresh key too (RFC 4568 §7.1.4: a new
        context must not restart the index under an old key).  The ``o=`` line
        keeps our session id; its version goes up by one only if our description
        changed (RFC 3264 §8).  Returns the new ``local_sdp``.  Raises
        :class:`NegotiationFailed` (488) with nothing changed when the offer is
        not acceptable (RFC 3261 §14.2).
        """
        if self.negotiated is None or self._stopped:
            raise RuntimeError("reanswer needs an established call")
        offer = _parse(offer_sdp)
        current = self.negotiated.srtp

        def same_key(tag: int, suite: str) -> CryptoAttribute:
            if current is not None and current.local.suite == suite:
                return dataclasses.replace(current.local, tag=tag)
            return CryptoAttribute.generate(tag=tag, suite=suite)

        answer, negotiated = self._negotiate(offer, same_key)
        if negotiated.srtp is not None and not _same_keys(negotiated.srtp, current):
            answer, negotiated = self._negotiate(offer, CryptoAttribute.generate)
        self.local_sdp = self._versioned(answer)
        self._apply(negotiated)
        return self.local_sdp

    def reoffer(self) -> bytes:
        """Our offer for a re-INVITE without SDP (RFC 3261 §14.2, RFC 3264 §5 and §8).

        The current description with the audio stream ``sendrecv`` again (a
        direction we answered earlier only mirrored the peer's hold) and, for
        SRTP, a fresh key of ours under the same tag and suite: the answer may
        re-key the peer's side, and a new context must not reuse our old key.
        Apply the answer (from the ACK) with :meth:`accept_answer`.
        """
        if self.negotiated is None or self._stopped:
            raise RuntimeError("reoffer needs an established call")
        offer = _parse(self.local_sdp)
        audio = next(m for m in offer.media if m.media == "audio" and m.port != 0)
        audio.direction = "sendrecv"
        crypto: dict[int, CryptoAttribute] = {}
        srtp = self.negotiated.srtp
        if srtp is not None:
            fresh = CryptoAttribute.generate(tag=srtp.local.tag, suite=srtp.local.suite)
            crypto[fresh.tag] = fresh
            audio.attributes = [a for a in audio.attributes if a.name != "crypto"]
            audio.attributes.append(Attribute("crypto", fresh.to_sdp()))
        self.local_sdp = self._versioned(offer)
        self._offer = offer
        self._offered_crypto = crypto
        return self.local_sdp

    def refresh_offer(self) -> bytes:
        """Our offer for a re-INVITE that only refreshes the dialog's target (RFC 5626
        §4.2.1: the signalling flow changed, the media did not).

        The current ``local_sdp`` unchanged: same ``o=`` version (RFC 3264 §8), same
        direction and, for SRTP, our current key under its tag, so an answer that keeps
        the peer's key (:meth:`accept_answer`) keeps both SRTP contexts running.
        """
        if self.negotiated is None or self._stopped:
            raise RuntimeError("refresh_offer needs an established call")
        offer = _parse(self.local_sdp)
        crypto: dict[int, CryptoAttribute] = {}
        srtp = self.negotiated.srtp
        if srtp is not None:
            crypto[srtp.local.tag] = srtp.local
        self._offer = offer
        self._offered_crypto = crypto
        return self.local_sdp

    def _negotiate(
        self, offer: SessionDescription, keys: Any
    ) -> tuple[SessionDescription, NegotiatedMedia]:
        return _negotiation().answer_for(  # type: ignore[no-any-return]
            offer,
            local_host=self.advertised_host,
            port=self.advertised_port,
            codecs=self._codecs(),
            srtp_policy=self.srtp,
            crypto_key_factory=keys,
        )

    def _versioned(self, description: SessionDescription) -> bytes:
        """*description* with our ``o=`` line: same session id, version + 1 if it changed."""
        previous = _parse(self.local_sdp)
        description.origin = previous.origin
        if description != previous:
            version = int(previous.origin.sess_version) + 1
            description.origin = dataclasses.replace(previous.origin, sess_version=str(version))
        return bytes(description)

    def _make_offer(self, secure: bool | None) -> None:
        if secure is None:
            secure = self.srtp != "off"
        if not secure and self.srtp == "required":
            raise _negotiation().NegotiationFailed(488, "SRTP required: will not offer RTP/AVP")
        offer, crypto = _negotiation().create_offer(
            local_host=self.advertised_host,
            port=self.advertised_port,
            codecs=self._codecs(),
            secure=secure,
        )
        self._offer = offer
        self._offered_crypto = crypto
        self.local_sdp = bytes(offer)

    def accept_answer(self, answer_sdp: bytes) -> NegotiatedMedia:
        """Apply the peer's answer to our offer (RFC 3264 §7); raises NegotiationFailed."""
        if self._offer is None:
            raise RuntimeError("accept_answer without create_offer")
        negotiated = _negotiation().parse_answer(
            _parse(answer_sdp),
            offer=self._offer,
            offered_crypto=self._offered_crypto,
            codecs=self._codecs(),
        )
        self._apply(negotiated)
        return negotiated

    def _apply(self, negotiated: NegotiatedMedia) -> None:
        """Configure the RTP stream; on a re-negotiation keep what did not change.

        Each SRTP direction whose key did not change keeps its running context
        (:meth:`SRTPContext.rekeyed`); an unchanged SDP
        address keeps the address RTP latched to (RFC 4961), so a session
        refresh does not send audio back to a NATed peer's private address.
        """
        previous = self.negotiated
        srtp = None
        if negotiated.srtp is not None:
            keys, current = negotiated.srtp, self.rtp.srtp
            if current is not None:
                srtp = current.rekeyed(keys.local, keys.remote)
            else:
                srtp = SRTPContext(keys.local, keys.remote)
        remote = negotiated.remote
        rtcp_remote = None
        if negotiated.remote is not None and negotiated.rtcp_port is not None:
            rtcp_remote = (negotiated.remote[0], negotiated.rtcp_port)
        if (
            previous is not None
            and remote is not None
            and (remote, negotiated.rtcp_port) == (previous.remote, previous.rtcp_port)
        ):
            remote, rtcp_remote = self.rtp.remote, self.rtp.rtcp_remote
        self.rtp.configure(
            remote=remote,
            codec=negotiated.codec,
            remote_fmtp=negotiated.remote_fmtp,
            payload_type=negotiated.payload_type,
            telephone_event_pt=negotiated.telephone_event_pt,
            direction=negotiated.direction,
            rtcp_mux=negotiated.rtcp_mux,
            rtcp_remote=rtcp_remote,
            ptime=negotiated.ptime,
            srtp=srtp,
        )
        self.negotiated = negotiated
        self.inactivity.reschedule()
        self.log.debug("media negotiated: {sdp}", sdp=redact_sdp(self.local_sdp))

    # lifecycle -----------------------------------------------------------------------
    @property
    def secure(self) -> bool:
        """True when the negotiated stream is SRTP."""
        return self.negotiated is not None and self.negotiated.srtp is not None

    @property
    def stats(self) -> MediaStats:
        """Live RTP statistics of this call."""
        return self.rtp.refresh_stats()

    def start(self, session: Any) -> None:
        """Attach *session* (an ISession) and start sending/receiving. Once only."""
        if self.negotiated is None:
            raise RuntimeError("media not negotiated yet")
        if self._started or self._stopped:
            raise RuntimeError("media already started or stopped")
        self._started = True
        self.session = session
        attach = getattr(session, "attach", None)
        if attach is not None:
            attach(self.rtp, self.reactor)
        self.rtp.start(session)
        self.inactivity.start()

    def signalled_dtmf(self) -> bool:
        """A key press came as SIP INFO (RFC 6086): may the dialog hand it to the session?

        A peer can send one press both as INFO and as RFC 4733 events; the call takes
        its keys one way only, the first way one arrived: False when RFC 4733 events
        already delivered a key (the INFO key is dropped), else True, and RFC 4733 keys
        are no longer delivered on this call.
        """
        if self.rtp.deliver_dtmf_events and self.rtp.stats.dtmf_received:
            return False
        self.rtp.deliver_dtmf_events = False
        return True

    @property
    def on_hold(self) -> bool:
        """True when the negotiated direction means the peer is not expected to send."""
        return self.rtp.direction in _ON_HOLD

    @property
    def bounded(self) -> bool:
        """True while an inactivity timeout bounds this call's life (a dialog may then
        drop its own fallback timer, e.g. the orphan timer once a new flow adopted it)."""
        return self.inactivity.armed

    def _timeout(self) -> float:
        config = self.config
        if self.on_hold:
            return float(getattr(config, "rtp_hold_timeout", HOLD_TIMEOUT))
        return float(getattr(config, "rtp_timeout", RTP_TIMEOUT))

    def _inactive(self, limit: float) -> None:
        """No RTP/RTCP for *limit* seconds: hang up (BYE through the session's dialog)
        and make sure the sockets are released even if that fails."""
        reason = "hold-timeout" if self.on_hold else "rtp-timeout"
        self.stop_reason = reason
        self.log.info("no RTP or RTCP for {limit} s on port {port}: ending the call",
                      limit=limit, port=self.local_port)
        dialog = getattr(self.session, "dialog", None)
        bye = getattr(dialog, "bye", None)
        if bye is not None:
            try:
                bye()
            except Exception:
                self.log.failure("BYE after RTP timeout failed")
        self.stop(reason)

    def stop(self, reason: str | None = None) -> None:
        """Stop the session and release the ports. Idempotent.

        *reason* (default: the inactivity reason if that ended the call, else
        ``"ended"``) becomes the session's ``stop_reason`` (``ISession.stop``).
        """
        if self._stopped:
            return
        self._stopped = True
        self.inactivity.stop()
        self.stop_reason = reason or self.stop_reason or "ended"
        self.rtp.stop(self.stop_reason)
