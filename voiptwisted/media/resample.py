"""Sample-rate conversion of mono int16 audio: whole buffers and 20 ms streams.

The conversion is FFmpeg's libswresample through PyAV (already a dependency for G.722): a
windowed-sinc polyphase filter that low-passes below the new Nyquist frequency when it
lowers the rate, so a 6 kHz tone is removed on the way to 8 kHz instead of folding back as
a 2 kHz alias, which is what dropping or interpolating samples does.

:func:`resample` converts a whole buffer (a WAV file loaded for playback, audio queued
when a call changes rate); :class:`StreamResampler` converts one call direction frame by
frame, keeping the filter's state between frames so frame edges leave no clicks, and
hands out exactly one 20 ms frame at the new rate for each 20 ms frame in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import av
from av.audio.frame import AudioFrame

if TYPE_CHECKING:
    import numpy as np
else:
    np = None

__all__ = ["StreamResampler", "resample"]


def _load_numpy() -> None:
    global np
    if np is None:
        import numpy

        np = numpy


def _frame(samples: np.ndarray, rate: int) -> AudioFrame:
    frame = AudioFrame.from_ndarray(
        np.ascontiguousarray(samples, np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = rate
    return frame


def _collect(frames: list[AudioFrame]) -> list[np.ndarray]:
    return [frame.to_ndarray()[0] for frame in frames]


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Mono int16 *samples* at *rate* Hz converted to *target* Hz (``len * target // rate``
    samples: the filter's tail is flushed, then the result trimmed or padded to that)."""
    _load_numpy()
    data = np.asarray(samples).astype(np.int16, copy=False).ravel()
    if rate == target or data.size == 0:
        return data
    if rate <= 0 or target <= 0:
        raise ValueError("sample rates must be positive")
    converter = av.AudioResampler(format="s16", layout="mono", rate=target)
    parts = _collect(converter.resample(_frame(data, rate)))
    parts += _collect(converter.resample(None))
    out = np.concatenate(parts) if parts else np.zeros(0, np.int16)
    count = len(data) * target // rate
    if len(out) < count:
        out = np.concatenate((out, np.zeros(count - len(out), np.int16)))
    return out[:count].astype(np.int16, copy=False)


class StreamResampler:
    """One direction of one call: 20 ms frames at ``rate`` in, 20 ms frames at ``target`` out.

    The filter delays its output by a few samples, so the first frames would come out short;
    instead the output starts with one frame of silence (20 ms of latency) and every
    :meth:`convert` returns exactly ``target // 50`` samples.  The rates' ratio is exact, so
    what is buffered stays between zero and two frames.
    """

    def __init__(self, rate: int, target: int) -> None:
        _load_numpy()
        if rate <= 0 or target <= 0 or rate % 50 or target % 50:
            raise ValueError("rates must be positive multiples of 50 Hz (20 ms frames)")
        self.rate = rate
        self.target = target
        self.frame_out = target // 50
        self._converter = av.AudioResampler(format="s16", layout="mono", rate=target)
        self._pending = np.zeros(self.frame_out, np.int16)

    def convert(self, samples: np.ndarray) -> np.ndarray:
        """The next 20 ms at ``target`` for *samples* (20 ms at ``rate``; other lengths are
        converted too, and what they add or lack comes out over the next frames)."""
        parts = _collect(self._converter.resample(_frame(samples, self.rate)))
        pending = np.concatenate([self._pending, *parts]) if parts else self._pending
        size = self.frame_out
        if len(pending) < size:
            pending = np.concatenate((pending, np.zeros(size - len(pending), np.int16)))
        out, self._pending = pending[:size], pending[size : size * 3]
        return out
