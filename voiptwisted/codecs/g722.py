"""G.722 wideband audio (ITU-T G.722 at 64 kbit/s), RTP payload format of RFC 3551 §4.5.2.

The DSP is FFmpeg's ``g722`` codec through PyAV; this module only keeps one codec context
per call and direction (G.722's ADPCM predictors carry state from frame to frame) and moves
int16 samples in and out of it without re-creating FFmpeg objects per frame.

RFC 3551 §4.5.2: G.722 samples audio at 16 kHz but its RTP clock rate is 8000 Hz (an error
in RFC 1890 kept for interoperability), so SDP says ``G722/8000`` and the RTP timestamp
advances 160 per 20 ms frame of 320 samples; the encoder emits 4 bits per sample, 160
octets per 20 ms.
"""

from __future__ import annotations

from typing import ClassVar

import av
import numpy as np
import numpy.typing as npt
from av.audio.frame import AudioFrame

__all__ = ["G722Decoder", "G722Encoder"]


class _G722:
    """What the G.722 encoder and decoder share: rates and frame sizes (RFC 3551 §4.5.2)."""

    encoding_name: ClassVar[str] = "G722"
    payload_type: ClassVar[int] = 9
    audio_rate: ClassVar[int] = 16000
    """Sampling rate of the audio the codec carries (samples per second)."""
    clock_rate: ClassVar[int] = 8000
    """RTP clock rate and SDP ``rtpmap`` rate: half the audio rate (RFC 3551 §4.5.2)."""
    frame_samples: ClassVar[int] = 320
    """Samples in one 20 ms frame at ``audio_rate``."""
    timestamp_step: ClassVar[int] = 160
    """RTP timestamp increment per 20 ms frame (``clock_rate`` x 20 ms, not the sample count)."""


class G722Encoder(_G722):
    """One direction of one call: 16 kHz int16 mono in, G.722 octets out."""

    def __init__(self) -> None:
        ctx = av.CodecContext.create("g722", "w")
        ctx.sample_rate = self.audio_rate
        ctx.layout = "mono"
        ctx.format = "s16"
        ctx.open()
        self._ctx = ctx
        self._frame = AudioFrame(format="s16", layout="mono", samples=self.frame_samples)
        self._frame.sample_rate = self.audio_rate
        self._pcm = np.frombuffer(self._frame.planes[0], dtype=np.int16)

    def encode(self, samples: npt.NDArray[np.int16]) -> bytes:
        """Encode one 20 ms frame (320 samples at 16 kHz) to 160 G.722 octets.

        The codec state carries over to the next call, so the frames of one stream go through
        one encoder in order.  The samples are copied into one FFmpeg frame allocated with the
        encoder (a fresh frame per call costs twice the CPU).
        """
        if samples.shape != (self.frame_samples,):
            raise ValueError(f"G.722 encodes one 20 ms mono frame of {self.frame_samples} samples")
        self._pcm[:] = samples
        return b"".join(bytes(packet) for packet in self._ctx.encode(self._frame))


class G722Decoder(_G722):
    """One direction of one call: G.722 octets in, 16 kHz int16 mono out."""

    def __init__(self) -> None:
        ctx = av.CodecContext.create("g722", "r")
        ctx.sample_rate = self.audio_rate
        ctx.layout = "mono"
        ctx.open()
        self._ctx = ctx

    def decode(self, payload: bytes) -> npt.NDArray[np.int16]:
        """Decode one RTP payload: two 16 kHz samples per octet (320 for a 20 ms packet).

        Every octet string is a valid G.722 stream, so this never fails on peer input; an
        empty payload decodes to no samples (and is not handed to FFmpeg, where an empty
        packet means end of stream).
        """
        if not payload:
            return np.zeros(0, dtype=np.int16)
        frames = self._ctx.decode(av.Packet(bytes(payload)))
        if len(frames) == 1:
            return frames[0].to_ndarray()[0]
        return np.concatenate([np.zeros(0, np.int16)] + [f.to_ndarray()[0] for f in frames])
