"""The codec registry: what each audio codec is on the wire and how to get its coders.

A :class:`Codec` is a description (RTP encoding name, RTP clock rate, audio sample
rate, channels, default payload type, ``a=fmtp`` parameters) plus two factories
that make the encoder and decoder of one direction of one call: a codec with
state between packets (G.722's ADPCM predictor, Opus) must not share it between
calls or directions, so the RTP stream asks for its own pair when it is
configured.  The description is what SDP offer/answer reads
(:mod:`voiptwisted.sdp.negotiation` takes the entries as plain data and imports
nothing from here).

G.711 (PCMA, PCMU), G.722 and Opus are registered here; their libraries (numpy's tables,
PyAV, libopus) load with the first coder asked for, not with this module, so a service
that only registers stays light.
Register more codecs with :func:`register_codec` and name them in
``MediaConfig.codecs``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "CODECS",
    "DEFAULT_CODECS",
    "OPUS_COMPLEXITY",
    "Codec",
    "Decoder",
    "Encoder",
    "lookup",
    "register_codec",
]


class Encoder(Protocol):
    """Turns one packet's worth of int16 samples into an RTP payload.

    A one-octet-per-sample coder may also expose ``encode_table`` (65,536 uint8
    code words indexed by the sample's bit pattern as uint16): the RTP path then
    codes into its reused send buffer instead of calling :meth:`encode`.
    """

    def encode(self, samples: Any) -> bytes:
        """The payload for *samples* (a one-dimensional int16 ndarray)."""


class Decoder(Protocol):
    """Turns one RTP payload into int16 samples.

    A one-octet-per-sample coder may also expose ``decode_table`` (256 int16
    samples indexed by the code word), used by the RTP path in place of
    :meth:`decode`.
    """

    def decode(self, payload: bytes) -> Any:
        """The samples of *payload* (a one-dimensional int16 ndarray)."""


@dataclass(frozen=True)
class Codec:
    """One audio codec: its SDP/RTP description and its coder factories.

    ``clock_rate`` is the RTP timestamp rate of ``a=rtpmap`` and ``sample_rate``
    the rate of the PCM the coders take and give; they differ for G.722 (RFC 3551
    §4.5.2: 8000 on the wire, 16 kHz audio).  ``payload_type`` is the static
    payload type of RFC 3551 §6, or None for a dynamic one (RFC 3551 §3).
    Equality and hashing use the description only.
    """

    name: str
    clock_rate: int
    sample_rate: int
    channels: int
    payload_type: int | None
    encoder_factory: Callable[..., Encoder] = field(compare=False, repr=False)
    decoder_factory: Callable[[], Decoder] = field(compare=False, repr=False)
    fmtp: str | None = None
    max_frames_per_packet: int = 6
    """How many 20 ms frames one RTP packet may carry (``a=ptime`` up to 120 ms).  1 for
    Opus: one Opus packet per RTP packet (RFC 7587 §4.2), and we send 20 ms ones."""
    peer_fmtp_aware: bool = False
    #: Why the codec cannot run on this machine (a system library missing), or None.
    missing: Callable[[], str | None] | None = field(default=None, compare=False, repr=False)
    """True when ``encoder_factory`` takes the peer's ``a=fmtp`` text (Opus: RFC 7587 §6.1
    ``maxplaybackrate``, ``useinbandfec``... shape what we send)."""

    @property
    def frame_samples(self) -> int:
        """Samples of one 20 ms frame of audio (``sample_rate`` / 50)."""
        return self.sample_rate // 50

    @property
    def timestamp_step(self) -> int:
        """RTP timestamp units per 20 ms frame (``clock_rate`` / 50: 160 for G.722's 320
        samples, RFC 3551 §4.5.2; 960 for Opus, RFC 7587 §4.1)."""
        return self.clock_rate // 50

    def encoder(self, peer_fmtp: str | None = None) -> Encoder:
        """A new encoder for one direction of one call, fitted to the peer's *peer_fmtp*."""
        if self.peer_fmtp_aware:
            return self.encoder_factory(peer_fmtp)  # type: ignore[call-arg]
        return self.encoder_factory()

    def decoder(self) -> Decoder:
        """A new decoder for one direction of one call."""
        return self.decoder_factory()


#: The codecs a call offers and accepts unless told otherwise, in preference order: wideband
#: first (Opus, G.722), G.711 last, for peers that have nothing else.
DEFAULT_CODECS = ("opus", "G722", "PCMA", "PCMU")

#: Registered codecs by upper-case encoding name (RFC 4855 §3: names are case-insensitive).
CODECS: dict[str, Codec] = {}


def register_codec(codec: Codec) -> None:
    """Make *codec* available to calls under its (case-insensitive) name."""
    CODECS[codec.name.upper()] = codec


def lookup(names: Iterable[str]) -> tuple[Codec, ...]:
    """The registered codecs called *names*, in that order; ValueError for an unknown one."""
    result = []
    for name in names:
        codec = CODECS.get(name.upper())
        if codec is None:
            raise ValueError(f"unknown codec {name!r}; register it with register_codec")
        result.append(codec)
    return tuple(result)


def usable(names: Iterable[str], *, explicit: bool) -> tuple[str, ...]:
    r"""*names* less the codecs that cannot run here (their system library is missing).

    Named *explicit*\ ly by the user, such a codec is a ValueError saying what to install;
    from the defaults it is left out, so a machine without libopus still speaks G.722 and
    G.711 instead of failing every call that negotiates Opus.
    """
    kept = []
    for name in names:
        codec = CODECS.get(name.upper())
        reason = codec.missing() if codec is not None and codec.missing is not None else None
        if reason is None:
            kept.append(name)
        elif explicit:
            raise ValueError(f"codec {name!r} cannot be used here: {reason}")
    return tuple(kept)


def _g711(name: str) -> Any:
    """One of the shared G.711 coders, importing numpy and the tables on first use."""
    from voiptwisted.codecs import g711

    return getattr(g711, name)


# RFC 3551 §4.5.14 and Table 4: PCMU (PT 0) and PCMA (PT 8), 8000 Hz mono.  G.711 keeps
# no state between packets, so every call shares the module's coders.
register_codec(Codec("PCMA", 8000, 8000, 1, 8,
                     lambda: _g711("ALAW_ENCODER"), lambda: _g711("ALAW_DECODER")))
register_codec(Codec("PCMU", 8000, 8000, 1, 0,
                     lambda: _g711("ULAW_ENCODER"), lambda: _g711("ULAW_DECODER")))


def _g722_encoder() -> Encoder:
    from voiptwisted.codecs.g722 import G722Encoder

    return G722Encoder()


def _g722_decoder() -> Decoder:
    from voiptwisted.codecs.g722 import G722Decoder

    return G722Decoder()


#: Encoder complexity (0..10) of our Opus calls.  One encoder per call runs on the server
#: for every 20 ms frame: at complexity 5 encoding alone took 247 µs a frame here (80 calls
#: a core before any decoding or I/O), and libopus's default 10 twice that; complexity 1
#: keeps SILK's speech coding (what a phone call carries) at about half that cost, within
#: the 100 Opus calls a core the project aims at (bench/RESULTS.md).
OPUS_COMPLEXITY = 1


def _opus_encoder(peer_fmtp: str | None = None) -> Encoder:
    from voiptwisted.codecs.opus import OpusEncoder, OpusSettings, parse_fmtp

    settings = OpusSettings(complexity=OPUS_COMPLEXITY)
    return OpusEncoder(settings.for_peer(parse_fmtp(peer_fmtp or "")))


def _opus_decoder() -> Decoder:
    from voiptwisted.codecs.opus import OpusDecoder

    return OpusDecoder()


# RFC 3551 §4.5.2: G.722 is PT 9, "G722/8000" on the wire though it samples at 16 kHz.
register_codec(Codec("G722", 8000, 16000, 1, 9, _g722_encoder, _g722_decoder))
# RFC 7587 §7: always "opus/48000/2" in SDP; a dynamic payload type (RFC 3551 §3); our
# fmtp says we want and send mono, use in-band FEC and play up to 48 kHz (the same text
# OpusSettings().fmtp() gives, written out so registering imports no libopus).
def _libopus_missing() -> str | None:
    """Why libopus cannot be loaded (opuslib-next needs the system library), or None."""
    from ctypes.util import find_library

    if find_library("opus") is None:
        return "libopus is not installed (Debian/Ubuntu: apt-get install libopus0)"
    return None


register_codec(Codec(
    "opus", 48000, 48000, 2, None, _opus_encoder, _opus_decoder,
    fmtp="maxplaybackrate=48000;sprop-maxcapturerate=48000;stereo=0;sprop-stereo=0;"
         "useinbandfec=1",
    max_frames_per_packet=1, peer_fmtp_aware=True, missing=_libopus_missing,
))
