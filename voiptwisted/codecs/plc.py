"""Packet-loss concealment for codecs without their own (G.711, G.722): repeat and fade.

A lost 20 ms frame is replaced by the last good frame, 6 dB quieter for each frame lost in
a row, the gain ramped sample by sample so no step is heard; after ``max_frames`` lost frames
(60 ms by default) the output is silence, since repeating one pitch period longer sounds
like a buzz rather than speech.  A good frame resets the fade.  This is the shape of the
simple concealment of ITU-T G.711 Appendix I without its pitch search: cheap, pure numpy, no
state but the last frame.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["RepeatFadeConcealer"]


class RepeatFadeConcealer:
    """Concealment state of one receive direction of one call."""

    def __init__(
        self, frame_samples: int, *, fade_db_per_frame: float = 6.0, max_frames: int = 3
    ) -> None:
        if frame_samples <= 0 or max_frames < 0 or fade_db_per_frame <= 0:
            raise ValueError("frame_samples > 0, max_frames >= 0 and a positive fade needed")
        self.frame_samples = frame_samples
        self.max_frames = max_frames
        self._step = 10.0 ** (-fade_db_per_frame / 20.0)
        self._ramp = np.arange(1, frame_samples + 1, dtype=np.float64) / frame_samples
        self._last = np.zeros(frame_samples, dtype=np.int16)
        self._lost = 0

    def good(self, frame: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        """Record a correctly received frame (returned unchanged) and reset the fade.

        The last ``frame_samples`` samples received are what a loss repeats, so a peer
        sending shorter or longer packets is concealed with its most recent audio too.
        """
        size = self.frame_samples
        count = min(len(frame), size)
        if count:
            self._last[: size - count] = self._last[count:]
            self._last[size - count :] = frame[len(frame) - count :]
        self._lost = 0
        return frame

    def conceal(self) -> npt.NDArray[np.int16]:
        """A frame for the next lost packet: the last good frame faded, or silence.

        Before any good frame, and from the ``max_frames + 1``-th loss in a row on, this is
        silence.
        """
        self._lost += 1
        if self._lost > self.max_frames:
            return np.zeros(self.frame_samples, dtype=np.int16)
        start = self._step ** (self._lost - 1)
        end = self._step**self._lost if self._lost < self.max_frames else 0.0
        gain = start + (end - start) * self._ramp
        return (self._last * gain).astype(np.int16)
