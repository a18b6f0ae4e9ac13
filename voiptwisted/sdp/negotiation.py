"""SDP offer/answer (RFC 3264) for one audio stream, with SDES-SRTP (RFC 4568).

Codec choice: the first codec of the *offer* (the offerer's preference order)
that our list contains, using the offer's payload type number (RFC 3264 §6.1);
our own list orders our offers.  The list is
data: :class:`CodecDescription` objects (the :mod:`voiptwisted.codecs` registry
entries are; ``CallMedia`` passes those) or names of RFC 3551 static payload
types.  This module reads only their names, rates, channels, payload types and
``a=fmtp``; it imports no codec, numpy, SRTP library or Twisted.

SRTP policy:

``required``
    inbound ``RTP/AVP`` streams are rejected (no usable stream -> 488); our
    offers are ``RTP/SAVP`` only.
``optional``
    inbound ``RTP/AVP`` or ``RTP/SAVP`` accepted; our offers are
    ``RTP/SAVP``; the dialog retries with ``create_offer(secure=False)`` after
    488/415/606.
``off``
    ``RTP/SAVP`` streams are rejected with port 0 (RFC 3264 §6: a stream we
    cannot accept is declined, not answered in clear — that would be a
    downgrade the offerer did not ask for); if the offer has no other audio
    stream the result is 488.  ``a=crypto`` on an ``RTP/AVP`` line (best
    effort SRTP, outside RFC 4568) is ignored under every policy.

The ``c=`` address must be one the peer can reach; the unspecified
addresses ``0.0.0.0``/``::`` are refused (``ValueError``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from voiptwisted.sdp.description import SessionDescription
from voiptwisted.sdp.policy import SRTP_POLICIES
from voiptwisted.sdp.types import (
    SUITES,
    Attribute,
    CryptoAttribute,
    MediaDescription,
    RTPPayloadFormat,
    SDESError,
    StaticPayloadType,
    ip_literal,
)

__all__ = [
    "TELEPHONE_EVENT_PT",
    "AudioFormat",
    "CodecDescription",
    "NegotiatedMedia",
    "NegotiationFailed",
    "SRTPParams",
    "answer_for",
    "create_offer",
    "parse_answer",
]

#: Payload type we use for telephone-event/8000 in our offers (RFC 4733 §7.1.1); the
#: telephone-event of another clock rate (``/48000`` next to Opus) takes a free dynamic one.
TELEPHONE_EVENT_PT = 101
_DYNAMIC = range(96, 128)
_REVERSE = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
            "inactive": "inactive"}
_OFFER_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")


class NegotiationFailed(Exception):
    """Offer/answer found nothing acceptable; ``status_code`` is the SIP answer (488)."""

    def __init__(self, status_code: int = 488, reason: str = "Not Acceptable Here") -> None:
        super().__init__(f"{status_code} {reason}")
        self.status_code = status_code
        self.reason = reason


class CodecDescription(Protocol):
    """What offer/answer needs to know of a codec: plain data, no coder.

    The entries of the :mod:`voiptwisted.codecs` registry have these attributes,
    and so does :class:`AudioFormat`; :class:`NegotiatedMedia` hands back the very
    object it was given, so the caller gets its registry entry (and coders) again.
    """

    @property
    def name(self) -> str:
        """RTP encoding name (``a=rtpmap``, RFC 4566 §6); compared case-insensitively."""

    @property
    def clock_rate(self) -> int:
        """RTP clock rate (``a=rtpmap``)."""

    @property
    def channels(self) -> int:
        """Audio channels (the ``a=rtpmap`` encoding parameter, RFC 4566 §6)."""

    @property
    def payload_type(self) -> int | None:
        """Static payload type (RFC 3551 §6), or None: we offer a dynamic one (96-127)."""

    @property
    def fmtp(self) -> str | None:
        """``a=fmtp`` parameters we offer and answer with, if any."""


def _static_audio() -> dict[str, Any]:
    """Upper-case encoding name -> its one static audio payload type (RFC 3551 §6 Table
    4); names with several (DVI4, L16) are left out: they need a description."""
    by_name: dict[str, list[Any]] = {}
    for spec in StaticPayloadType:
        if spec.value.frame_size:
            by_name.setdefault(spec.value.encoding_name.upper(), []).append(spec.value)
    return {name: specs[0] for name, specs in by_name.items() if len(specs) == 1}


#: Looked up per codec name given as text, instead of scanning the enum each time.
_STATIC_AUDIO = _static_audio()


@dataclass(frozen=True)
class AudioFormat:
    """A :class:`CodecDescription` as plain values: what a codec name given as text means."""

    name: str
    clock_rate: int
    channels: int = 1
    payload_type: int | None = None
    fmtp: str | None = None

    @classmethod
    def static(cls, name: str) -> AudioFormat:
        """The static audio payload type called *name* in RFC 3551 §6 Table 4 (ValueError
        if there is none, or several as for DVI4 and L16)."""
        spec = _STATIC_AUDIO.get(name.upper())
        if spec is None:
            raise ValueError(
                f"unknown codec {name!r}: give its description (e.g. a voiptwisted.codecs entry)"
            )
        return cls(spec.encoding_name, spec.sample_rate, spec.channels, spec.pt)


@dataclass(frozen=True)
class SRTPParams:
    """The SDES keys of a call: ours (protects what we send) and the peer's."""

    local: CryptoAttribute
    remote: CryptoAttribute

    def __repr__(self) -> str:
        return f"<SRTPParams {self.local.suite} keys=<redacted>>"


@dataclass(frozen=True)
class NegotiatedMedia:
    """Outcome of offer/answer for the audio stream (what the RTP protocol needs)."""

    payload_type: int
    codec: CodecDescription
    ptime: int
    telephone_event_pt: int | None
    direction: str
    remote_host: str | None
    remote_port: int
    rtcp_mux: bool
    rtcp_port: int | None
    srtp: SRTPParams | None = None
    #: The peer's ``a=fmtp`` for the chosen codec (Opus: RFC 7587 §6.1 receiver wishes).
    remote_fmtp: str | None = None

    @property
    def codec_name(self) -> str:
        return self.codec.name

    @property
    def clock_rate(self) -> int:
        return self.codec.clock_rate

    @property
    def remote(self) -> tuple[str, int] | None:
        """Where to send RTP before latching; None on hold (``c=0.0.0.0``) or a hostname."""
        if self.remote_host is None or self.remote_port == 0:
            return None
        return (self.remote_host, self.remote_port)


def _check_host(host: str) -> str:
    address = ip_literal(host)
    if address is None:
        return host
    if address.is_unspecified:
        raise ValueError("the SDP address must be reachable, not 0.0.0.0 or ::")
    return str(address)


def _remote_host(sd: SessionDescription, media: MediaDescription) -> str | None:
    """The peer's media IP, or None for hold (0.0.0.0, RFC 3264 §8.4) or non-literals."""
    connection = sd.media_connection(media)
    if connection is None:
        return None
    address = ip_literal(connection.address)
    if address is None:
        return None
    return None if address.is_unspecified else str(address)


def _find_format(
    media: MediaDescription, name: str, rate: int, channels: int = 1
) -> RTPPayloadFormat | None:
    for fmt in media.fmt:
        if (
            (fmt.encoding_name or "").upper() == name.upper()
            and fmt.sample_rate == rate
            and fmt.channels == channels
        ):
            return fmt
    return None


def _ptime(value: int | None) -> int:
    """Packetisation we use: the peer's a=ptime when it is a multiple of 20 ms up to 120."""
    if value is not None and value % 20 == 0 and 20 <= value <= 120:
        return value
    return 20


def _codecs(codecs: Iterable[str | CodecDescription]) -> list[CodecDescription]:
    """Our codecs in preference order; a name is an RFC 3551 static payload type."""
    return [AudioFormat.static(c) if isinstance(c, str) else c for c in codecs]


def _rejected(media: MediaDescription) -> MediaDescription:
    """The answer's copy of a declined stream: port 0, formats kept (RFC 3264 §6)."""
    formats = list(media.formats)
    fmt = [RTPPayloadFormat(f.payload_type) for f in media.fmt]
    if not fmt and not formats:
        formats = ["0"]
    return MediaDescription(media.media, 0, media.proto, fmt=fmt, formats=formats)


def _audio_section(
    port: int,
    proto: str,
    codec_pt: int,
    codec: CodecDescription,
    te_pt: int | None,
    te_fmtp: str | None,
    ptime: int,
    direction: str,
    rtcp_mux: bool,
    crypto: Iterable[CryptoAttribute] = (),
    extra_codecs: Iterable[tuple[int, CodecDescription]] = (),
    extra_events: Iterable[tuple[int, int]] = (),
) -> MediaDescription:
    fmt = [RTPPayloadFormat(codec_pt, codec.fmtp, codec.name, codec.channels, codec.clock_rate)]
    for pt, other in extra_codecs:
        fmt.append(RTPPayloadFormat(pt, other.fmtp, other.name, other.channels, other.clock_rate))
    if te_pt is not None:
        fmt.append(RTPPayloadFormat(te_pt, te_fmtp, "telephone-event", 1, codec.clock_rate))
    for pt, rate in extra_events:
        fmt.append(RTPPayloadFormat(pt, te_fmtp, "telephone-event", 1, rate))
    attributes = [Attribute("ptime", str(ptime)), Attribute(direction)]
    if rtcp_mux:
        attributes.append(Attribute("rtcp-mux"))
    attributes.extend(Attribute("crypto", c.to_sdp()) for c in crypto)
    return MediaDescription("audio", port, proto, fmt=fmt, attributes=attributes)


def _pick_crypto(
    media: MediaDescription, factory: Callable[..., CryptoAttribute]
) -> SRTPParams | None:
    """RFC 4568 §7.1.2: take the first offered a=crypto line we fully support."""
    for attribute in media.get_attributes("crypto"):
        try:
            remote = CryptoAttribute.parse_supported(attribute.value or "")
        except SDESError:
            continue
        local = factory(tag=remote.tag, suite=remote.suite)
        return SRTPParams(local=local, remote=remote)
    return None


def answer_for(
    offer: SessionDescription,
    *,
    local_host: str,
    port: int,
    codecs: Iterable[str | CodecDescription] = ("PCMA", "PCMU"),
    srtp_policy: str = "optional",
    crypto_key_factory: Callable[..., CryptoAttribute] = CryptoAttribute.generate,
) -> tuple[SessionDescription, NegotiatedMedia]:
    """Answer *offer* (RFC 3264 §6): accept the first usable audio stream, decline the rest.

    Raises :class:`NegotiationFailed` (488) when no audio stream is acceptable.
    """
    if srtp_policy not in SRTP_POLICIES:
        raise ValueError(f"srtp policy must be one of {SRTP_POLICIES}")
    host = _check_host(local_host)
    ours = _codecs(codecs)
    sections: list[MediaDescription] = []
    result: NegotiatedMedia | None = None
    reasons: list[str] = []
    for media in offer.media:
        chosen = None
        if result is None and media.media == "audio" and media.port != 0:
            chosen = _negotiate_stream(
                offer, media, host, port, ours, srtp_policy, crypto_key_factory, reasons
            )
        if chosen is None:
            sections.append(_rejected(media))
        else:
            section, result = chosen
            sections.append(section)
    if result is None:
        reason = reasons[0] if reasons else "no audio stream offered"
        raise NegotiationFailed(488, reason)
    answer = SessionDescription.create(host, host, sections, username="voiptwisted")
    return answer, result


def _negotiate_stream(
    offer: SessionDescription,
    media: MediaDescription,
    host: str,
    port: int,
    ours: list[CodecDescription],
    policy: str,
    factory: Callable[..., CryptoAttribute],
    reasons: list[str],
) -> tuple[MediaDescription, NegotiatedMedia] | None:
    srtp = None
    if media.proto == "RTP/SAVP":
        if policy == "off":
            reasons.append("SRTP offered but disabled here")
            return None
        srtp = _pick_crypto(media, factory)
        if srtp is None:
            reasons.append("no supported a=crypto suite offered")
            return None
    elif media.proto == "RTP/AVP":
        if policy == "required":
            reasons.append("SRTP required (RTP/SAVP)")
            return None
    else:
        reasons.append(f"unsupported transport {media.proto[:30]}")
        return None
    chosen = _first_offered(media, ours)
    if chosen is None:
        reasons.append("no common codec")
        return None
    fmt, codec = chosen
    event = _find_format(media, "telephone-event", codec.clock_rate)
    te_pt = event.payload_type if event is not None else None
    ptime = _ptime(media.ptime)
    direction = _REVERSE[offer.media_direction(media)]
    rtcp_mux = media.rtcp_mux
    section = _audio_section(
        port, media.proto, fmt.payload_type, codec, te_pt,
        event.fmtp if event is not None else None, ptime, direction, rtcp_mux,
        [srtp.local] if srtp is not None else (),
    )
    remote_port = media.port
    negotiated = NegotiatedMedia(
        payload_type=fmt.payload_type,
        codec=codec,
        ptime=ptime,
        telephone_event_pt=te_pt,
        direction=direction,
        remote_host=_remote_host(offer, media),
        remote_port=remote_port,
        rtcp_mux=rtcp_mux,
        rtcp_port=remote_port if rtcp_mux else (media.rtcp_port or remote_port + 1),
        srtp=srtp,
        remote_fmtp=fmt.fmtp,
    )
    return section, negotiated


def _first_offered(
    media: MediaDescription, ours: list[CodecDescription]
) -> tuple[RTPPayloadFormat, CodecDescription] | None:
    """The offer's first format that is one of our codecs (RFC 3264 §6.1: the offerer lists
    its formats in its order of preference, and answering with its first choice we both
    can use keeps a wideband call wideband when the offerer asked for it first)."""
    for fmt in media.fmt:
        name = (fmt.encoding_name or "").upper()
        for codec in ours:
            if (
                codec.name.upper() == name
                and fmt.sample_rate == codec.clock_rate
                and fmt.channels == codec.channels
            ):
                return fmt, codec
    return None


def create_offer(
    *,
    local_host: str,
    port: int,
    codecs: Iterable[str | CodecDescription] = ("PCMA", "PCMU"),
    secure: bool = False,
    crypto_key_factory: Callable[..., CryptoAttribute] = CryptoAttribute.generate,
) -> tuple[SessionDescription, dict[int, CryptoAttribute]]:
    """Our offer (RFC 3264 §5): our codecs, telephone-event, ptime 20, sendrecv, rtcp-mux.

    RFC 4733 §7.1.1: telephone-event is offered once per distinct clock rate of our codecs
    (``telephone-event/48000`` next to Opus, ``/8000`` next to G.722 and G.711), since a
    stream's events use its audio codec's RTP clock; ``/8000`` keeps payload type 101.

    With *secure*, the stream is ``RTP/SAVP`` with one fresh key per offered
    suite; the returned dict (tag -> our key) is needed by :func:`parse_answer`.
    """
    host = _check_host(local_host)
    ours = _codecs(codecs)
    if not ours:
        raise ValueError("at least one codec is needed")
    rates = list(dict.fromkeys(codec.clock_rate for codec in ours))
    used = {c.payload_type for c in ours if c.payload_type is not None}
    if 8000 in rates:
        used.add(TELEPHONE_EVENT_PT)
    free = iter([pt for pt in _DYNAMIC if pt not in used])
    if sum(c.payload_type is None for c in ours) + len(rates) > len(_DYNAMIC) - len(used):
        raise ValueError("more codecs than dynamic payload types (96-127)")
    listed: list[tuple[int, CodecDescription]] = []
    for codec in ours:
        if codec.payload_type is not None:
            listed.append((codec.payload_type, codec))
        else:
            listed.append((next(free), codec))
    events = [(TELEPHONE_EVENT_PT if rate == 8000 else next(free), rate) for rate in rates]
    crypto = {}
    if secure:
        for tag, suite in enumerate(_OFFER_SUITES, 1):
            crypto[tag] = crypto_key_factory(tag=tag, suite=suite)
    first_pt, first = listed[0]
    section = _audio_section(
        port, "RTP/SAVP" if secure else "RTP/AVP", first_pt, first, None,
        "0-16", 20, "sendrecv", True, crypto.values(), listed[1:], events,
    )
    offer = SessionDescription.create(host, host, [section], username="voiptwisted")
    return offer, crypto


def parse_answer(
    answer: SessionDescription,
    *,
    offer: SessionDescription,
    offered_crypto: dict[int, CryptoAttribute] | None = None,
    codecs: Iterable[str | CodecDescription] = ("PCMA", "PCMU"),
) -> NegotiatedMedia:
    """Check the answer to our offer (RFC 3264 §7) and return what to send and expect.

    We send with the first codec in the answer that we offered.  Raises
    :class:`NegotiationFailed` when the stream was declined, the codec or
    transport does not match what we offered, or the SRTP key is missing.
    """
    if len(answer.media) != len(offer.media) or not answer.media:
        raise NegotiationFailed(488, "answer has a different number of m= lines (RFC 3264 §6)")
    ours = {c.name.upper(): c for c in _codecs(codecs)}
    # Our audio stream: the first in offers we create, wherever the call's first offer
    # put it in the current description a re-INVITE without SDP re-offers (RFC 3264 §8).
    index = next(
        (i for i, m in enumerate(offer.media) if m.media == "audio" and m.port != 0), None
    )
    if index is None:
        raise NegotiationFailed(488, "our offer has no audio stream")
    media, offered = answer.media[index], offer.media[index]
    if media.port == 0:
        raise NegotiationFailed(488, "audio stream declined")
    if media.proto != offered.proto:
        raise NegotiationFailed(488, f"answer transport {media.proto[:30]} is not what we offered")
    chosen = None
    for fmt in media.fmt:
        name = (fmt.encoding_name or "").upper()
        codec = ours.get(name)
        if (
            codec is not None
            and fmt.sample_rate == codec.clock_rate
            and fmt.channels == codec.channels
        ):
            chosen = (fmt, codec)
            break
    if chosen is None:
        raise NegotiationFailed(488, "no common codec in the answer")
    fmt, codec = chosen
    srtp = None
    if offered.proto == "RTP/SAVP":
        srtp = _answer_crypto(media, offered_crypto or {})
    event = _find_format(media, "telephone-event", codec.clock_rate)
    theirs = answer.media_direction(media)
    return NegotiatedMedia(
        payload_type=fmt.payload_type,
        codec=codec,
        ptime=_ptime(media.ptime),
        telephone_event_pt=event.payload_type if event is not None else None,
        direction=_REVERSE[theirs],
        remote_host=_remote_host(answer, media),
        remote_port=media.port,
        rtcp_mux=media.rtcp_mux,
        rtcp_port=media.port if media.rtcp_mux else (media.rtcp_port or media.port + 1),
        srtp=srtp,
        remote_fmtp=fmt.fmtp,
    )


def _answer_crypto(media: MediaDescription, offered: dict[int, CryptoAttribute]) -> SRTPParams:
    """RFC 4568 §7.1.3: exactly one a=crypto whose tag and suite match one we offered."""
    lines = media.get_attributes("crypto")
    if len(lines) != 1:
        raise NegotiationFailed(488, "answer must carry exactly one a=crypto")
    try:
        remote = CryptoAttribute.parse_supported(lines[0].value or "")
    except SDESError as exc:
        raise NegotiationFailed(488, str(exc)) from None
    local = offered.get(remote.tag)
    if local is None or local.suite != remote.suite or remote.suite not in SUITES:
        raise NegotiationFailed(488, "answer's a=crypto tag/suite was not offered")
    return SRTPParams(local=local, remote=remote)
