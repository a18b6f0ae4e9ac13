"""Packet-loss concealment for codecs without their own (G.711, G.722): repeat and fade.

A lost 20 ms frame is replaced by the last good frame, 6 dB quieter for each frame lost in
a row, the gain ramped sample by sample so no step is heard; after ``max_frames`` lost frames
(60 ms by default) the output is silence, since repeating one pitch period longer sounds
like a buzz rather than speech.  A good frame resets the fade.  This is the shape of the
simple concealment of ITU-T G.711 Appendix I without its pitch search: cheap, pure numpy, no
state but the last frame.

A whole received frame is kept by reference, not copied (it runs for every packet of every
call, issue 16): the decoded array is the stream's own, fresh for each packet.  The fade ramp
is shared by every concealer of one frame size, read-only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["RepeatFadeConcealer"]

#: Read-only gain ramps (1/n ... 1) by frame size, shared by all calls of that size.
_RAMPS: dict[int, npt.NDArray[np.float64]] = {}


def _ramp(frame_samples: int) -> npt.NDArray[np.float64]:
    ramp = _RAMPS.get(frame_samples)
    if ramp is None:
        ramp = np.arange(1, frame_samples + 1, dtype=np.float64) / frame_samples
        ramp.setflags(write=False)
        ramp = _RAMPS.setdefault(frame_samples, ramp)
    return ramp


class RepeatFadeConcealer:
    """Concealment state of one receive direction of one call."""

    __slots__ = ("_last", "_lost", "_ramp", "_step", "frame_samples", "max_frames")

    def __init__(
        self, frame_samples: int, *, fade_db_per_frame: float = 6.0, max_frames: int = 3
    ) -> None:
        if frame_samples <= 0 or max_frames < 0 or fade_db_per_frame <= 0:
            raise ValueError("frame_samples > 0, max_frames >= 0 and a positive fade needed")
        self.frame_samples = frame_samples
        self.max_frames = max_frames
        self._step = 10.0 ** (-fade_db_per_frame / 20.0)
        self._ramp = _ramp(frame_samples)
        #: The last frame_samples samples received (None before any: silence).
        self._last: npt.NDArray[np.int16] | None = None
        self._lost = 0

    def good(self, frame: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """Record a correctly received frame (returned unchanged) and reset the fade.

        The last ``frame_samples`` samples received are what a loss repeats, so a peer
        sending shorter or longer packets is concealed with its most recent audio too.
        """
        size = self.frame_samples
        self._lost = 0
        if len(frame) == size:
            self._last = frame
            return frame
        count = min(len(frame), size)
        if count:
            last = np.zeros(size, np.int16) if self._last is None else self._last
            # A new array: the previous one may be a received frame kept by reference.
            self._last = np.concatenate((last[count:], frame[len(frame) - count :]))
        return frame

    def conceal(self) -> npt.NDArray[np.int16]:
        """A frame for the next lost packet: the last good frame faded, or silence.

        Before any good frame, and from the ``max_frames + 1``-th loss in a row on, this is
        silence.
        """
        self._lost += 1
        if self._lost > self.max_frames or self._last is None:
            return np.zeros(self.frame_samples, dtype=np.int16)
        start = self._step ** (self._lost - 1)
        end = self._step**self._lost if self._lost < self.max_frames else 0.0
        gain = start + (end - start) * self._ramp
        return (self._last * gain).astype(np.int16)
