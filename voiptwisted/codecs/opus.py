"""Opus (RFC 6716) with the RTP payload format and SDP parameters of RFC 7587.

The codec is libopus through the ``opuslib_next`` binding.  FFmpeg's libopus wrapper (PyAV)
is not enough here: it always decodes with ``decode_fec=0`` and treats an empty packet as end
of stream, so neither in-band FEC for a lost packet nor libopus's own concealment can be
reached through it.  The encoder and the decoder each own one libopus state for one direction
of one call and reuse preallocated buffers, so a 20 ms frame costs one C call and one copy.

RFC 7587 §4.1 and §7: SDP always says ``opus/48000/2`` and the RTP clock is 48 kHz whatever
is sent; we send mono at 48 kHz (960 samples per 20 ms) and the decoder, being mono, folds a
peer's stereo packets down to mono (RFC 7587 §3.3: a decoder configured for mono handles
a stereo stream).
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import opuslib_next
from opuslib_next.api import decoder as _dec
from opuslib_next.api import encoder as _enc

__all__ = [
    "OpusDecodeError",
    "OpusDecoder",
    "OpusEncoder",
    "OpusSettings",
    "parse_fmtp",
]

_MAX_PACKET = 1275
"""Largest payload of one Opus frame (RFC 6716 §3.2.1), so the encoder's output buffer size."""
_MAX_DECODED = 5760
"""Samples of the longest packet, 120 ms at 48 kHz (RFC 6716 §3.2.5)."""
_MAX_FMTP = 1024
"""A peer's fmtp longer than this is ignored whole: RFC 7587 §6.1 parameters fit in far less."""

_BANDWIDTHS = (
    (8000, opuslib_next.constants.BANDWIDTH_NARROWBAND),
    (12000, opuslib_next.constants.BANDWIDTH_MEDIUMBAND),
    (16000, opuslib_next.constants.BANDWIDTH_WIDEBAND),
    (24000, opuslib_next.constants.BANDWIDTH_SUPERWIDEBAND),
)


class OpusDecodeError(ValueError):
    """libopus refused a payload (RFC 6716 §3.4 malformed packet); the packet is to be dropped."""


class _Opus:
    """Rates and frame sizes shared by the Opus encoder and decoder (RFC 7587 §4.1, §7)."""

    encoding_name: ClassVar[str] = "opus"
    rtpmap_channels: ClassVar[int] = 2
    """Always 2 in the SDP ``rtpmap`` line (``opus/48000/2``), even for mono (RFC 7587 §7)."""
    audio_rate: ClassVar[int] = 48000
    """Rate of the int16 samples going in and out."""
    clock_rate: ClassVar[int] = 48000
    """RTP clock rate, 48 kHz whatever the audio bandwidth (RFC 7587 §4.1)."""
    frame_samples: ClassVar[int] = 960
    """Samples in one 20 ms frame at ``audio_rate``."""
    timestamp_step: ClassVar[int] = 960
    """RTP timestamp increment per 20 ms frame."""


@dataclass(frozen=True)
class OpusSettings:
    """What our Opus encoder does and what we announce in SDP (RFC 7587 §6.1).

    ``max_playback_rate`` is the widest audio we can play (announced as ``maxplaybackrate``);
    ``max_capture_rate`` caps the audio band we encode (announced as ``sprop-maxcapturerate``,
    lowered to a peer's ``maxplaybackrate`` by ``for_peer``); ``inband_fec`` adds SILK's
    low-bit-rate copy of each frame to the next packet, worth it only when the receiver uses it
    (its ``useinbandfec=1``), and ``packet_loss_percent`` is the loss the encoder expects,
    which sets how much rate the FEC takes.  ``complexity`` (0..10) trades CPU for quality:
    libopus's default 10 costs about twice the CPU of 5 per frame, and a server encodes one
    stream per call.
    """

    bitrate: int = 32000
    complexity: int = 5
    inband_fec: bool = True
    packet_loss_percent: int = 10
    max_playback_rate: int = 48000
    max_capture_rate: int = 48000

    def __post_init__(self) -> None:
        if not 6000 <= self.bitrate <= 510000:
            raise ValueError("Opus bitrate must be within 6000..510000 (RFC 7587 §6.1)")
        if not 0 <= self.complexity <= 10:
            raise ValueError("Opus complexity must be within 0..10")
        if not 0 <= self.packet_loss_percent <= 100:
            raise ValueError("packet_loss_percent must be within 0..100")
        for rate in (self.max_playback_rate, self.max_capture_rate):
            if not 8000 <= rate <= 48000:
                raise ValueError("Opus playback/capture rates must be within 8000..48000")

    def fmtp(self) -> dict[str, str]:
        """The ``a=fmtp`` parameters we announce for our receive side (RFC 7587 §6.1).

        ``stereo=0``: we want mono; ``sprop-stereo=0``: we send mono; ``useinbandfec=1``: our
        decoder uses FEC (it does, see ``OpusDecoder.decode_fec``); ``maxplaybackrate`` and
        ``sprop-maxcapturerate`` tell the peer not to spend bits on audio above them.
        """
        return {
            "maxplaybackrate": str(self.max_playback_rate),
            "sprop-maxcapturerate": str(self.max_capture_rate),
            "stereo": "0",
            "sprop-stereo": "0",
            "useinbandfec": "1",
        }

    def for_peer(self, peer_fmtp: Mapping[str, str]) -> OpusSettings:
        """These settings adjusted to a peer's fmtp (as ``parse_fmtp`` returns it).

        RFC 7587 §6.1: ``maxplaybackrate`` lowers the band we encode (our capture rate),
        ``maxaveragebitrate``
        caps our bitrate, and FEC is sent only when the peer says ``useinbandfec=1`` (absent
        means 0).  ``stereo`` needs nothing: we send mono, which any Opus receiver plays.
        Values that are not numbers in range are ignored, as if absent.
        """
        playback = _bounded_int(peer_fmtp.get("maxplaybackrate"), 8000, 48000)
        bitrate_cap = _bounded_int(peer_fmtp.get("maxaveragebitrate"), 6000, 510000)
        return replace(
            self,
            max_capture_rate=min(self.max_capture_rate, playback or 48000),
            bitrate=min(self.bitrate, bitrate_cap or self.bitrate),
            inband_fec=self.inband_fec and peer_fmtp.get("useinbandfec") == "1",
        )


def parse_fmtp(text: str) -> dict[str, str]:
    """Parse an Opus ``a=fmtp`` parameter list (``key=value; key=value``, RFC 7587 §6.1).

    Keys are lower-cased (SDP parameter names are case-insensitive), blanks around keys and
    values dropped, items without ``=`` skipped.  The parse is one linear split; an
    over-long value (more than 1 KiB) is ignored whole rather than trusted.
    """
    if len(text) > _MAX_FMTP:
        return {}
    params: dict[str, str] = {}
    for item in text.split(";"):
        key, sep, value = item.partition("=")
        if sep:
            params[key.strip().lower()] = value.strip()
    return params


def _bounded_int(value: str | None, low: int, high: int) -> int | None:
    if value is None or not value.isdigit() or len(value) > 7:
        return None
    number = int(value)
    return number if low <= number <= high else None


class OpusEncoder(_Opus):
    """One direction of one call: 48 kHz int16 mono in, Opus packets out (RFC 7587 §4.2)."""

    def __init__(self, settings: OpusSettings | None = None) -> None:
        self.settings = settings or OpusSettings()
        self._opus = opuslib_next.Encoder(self.audio_rate, 1, "voip")
        self._opus.bitrate = self.settings.bitrate
        self._opus.complexity = self.settings.complexity
        self._opus.inband_fec = int(self.settings.inband_fec)
        self._opus.packet_loss_perc = self.settings.packet_loss_percent
        self._opus.max_bandwidth = _bandwidth_for(self.settings.max_capture_rate)
        self._pcm = (ctypes.c_int16 * self.frame_samples)()
        self._pcm_view = np.frombuffer(self._pcm, dtype=np.int16)
        self._out = ctypes.create_string_buffer(_MAX_PACKET)

    def encode(self, samples: npt.NDArray[np.int16]) -> bytes:
        """Encode one 20 ms frame (960 samples at 48 kHz) to one Opus packet."""
        if samples.shape != (self.frame_samples,):
            raise ValueError(f"Opus encodes one 20 ms mono frame of {self.frame_samples} samples")
        self._pcm_view[:] = samples
        size = _enc.libopus_encode(
            self._opus.encoder_state, self._pcm, self.frame_samples, self._out, _MAX_PACKET
        )
        if size < 0:
            raise opuslib_next.OpusError(size)
        return ctypes.string_at(self._out, size)


def _bandwidth_for(max_rate: int) -> int:
    for rate, bandwidth in _BANDWIDTHS:
        if max_rate <= rate:
            return bandwidth
    return opuslib_next.constants.BANDWIDTH_FULLBAND


class OpusDecoder(_Opus):
    """One direction of one call: Opus packets in, 48 kHz int16 mono out.

    Loss handling (RFC 7587 §3.2, RFC 6716 §4.4): when a packet is lost and the next one has
    arrived, ``decode_fec(next)`` rebuilds the lost frame from the FEC copy inside the next
    packet (then ``decode(next)`` as usual); when nothing has arrived, ``conceal()`` runs
    libopus's packet-loss concealment.  Both keep the decoder state continuous.
    """

    def __init__(self) -> None:
        self._opus = opuslib_next.Decoder(self.audio_rate, 1)
        self._pcm = (ctypes.c_int16 * _MAX_DECODED)()
        self._pcm_view = np.frombuffer(self._pcm, dtype=np.int16)
        self._last_samples = self.frame_samples

    def decode(self, payload: bytes) -> npt.NDArray[np.int16]:
        """Decode one RTP payload (one Opus packet, mono or stereo) to mono samples.

        Raises ``OpusDecodeError`` for a payload libopus rejects (empty or malformed).
        """
        if not payload:
            raise OpusDecodeError("empty Opus payload")
        samples = self._run(bytes(payload), _MAX_DECODED, fec=0)
        self._last_samples = len(samples)
        return samples

    def decode_fec(self, next_payload: bytes) -> npt.NDArray[np.int16]:
        """The lost frame before ``next_payload``, from that packet's in-band FEC data.

        When the next packet carries no FEC (the peer did not enable it, or it coded in CELT
        mode) libopus falls back to concealment, so this always returns one frame of the lost
        packet's duration.  ``next_payload`` itself must still be passed to ``decode``.
        """
        if not next_payload:
            raise OpusDecodeError("empty Opus payload")
        return self._run(bytes(next_payload), self._last_samples, fec=1)

    def conceal(self) -> npt.NDArray[np.int16]:
        """One frame for a lost packet with nothing after it: libopus's own PLC (RFC 6716 §4.4).

        Successive calls fade towards silence as libopus does.
        """
        return self._run(None, self._last_samples, fec=0)

    def _run(self, data: bytes | None, frame_size: int, fec: int) -> npt.NDArray[np.int16]:
        length = len(data) if data is not None else 0
        count = _dec.libopus_decode(
            self._opus.decoder_state, data, length, self._pcm, frame_size, fec
        )
        if count < 0:
            raise OpusDecodeError(f"libopus could not decode the packet (error {count})")
        return self._pcm_view[:count].copy()
