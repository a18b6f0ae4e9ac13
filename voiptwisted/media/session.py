"""Call media sessions: the application's side of a call's audio and DTMF (``ISession``).

Audio is one-dimensional ``numpy.int16`` mono at :attr:`Session.sample_rate`: the
negotiated codec's audio rate (8000 Hz for G.711, 16000 for G.722, 48000 for Opus)
unless the session class declares the rate it wants (``sample_rate = 16000``), in which
case the call's RTP stream resamples both ways.  One frame is 20 ms (``sample_rate / 50``
samples).  The call's RTP
protocol calls :meth:`Session.next_frame` once per 20 ms pacer tick and
:meth:`Session.audio_received` / :meth:`Session.dtmf_received` for what the
remote party sends.  numpy is imported by the first session created (a call),
not with this module, so an idle service does not load it.
"""

from __future__ import annotations

import inspect
import json
import os
import re
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from zope.interface import implementer

from voiptwisted.interfaces import ISession
from voiptwisted.media.wav import read_wav, resample, to_mono, write_wav

if TYPE_CHECKING:
    import numpy as np
else:
    np = None

__all__ = ["EchoSession", "PlaybackSession", "RecordingSession", "Session"]

_DTMF_DIGITS = frozenset("0123456789*#ABCD")


def _load_numpy() -> None:
    """Import numpy once, into this module's globals (first session; frames pay nothing)."""
    global np
    if np is None:
        import numpy

        np = numpy


@implementer(ISession)
class Session:
    """Base media session: queues outbound audio in 20 ms frames; override the hooks.

    ``send_audio`` never blocks: audio beyond ``max_queue_seconds`` is
    dropped (and counted in :attr:`dropped_samples`) so memory stays bounded.
    """

    max_queue_seconds = 60.0
    log = Logger()

    def __init__(self, dialog: Any, **kwargs: Any) -> None:
        if kwargs:
            raise TypeError(f"unexpected session arguments: {', '.join(sorted(kwargs))}")
        _load_numpy()
        self.dialog = dialog
        self._frames: deque[np.ndarray] = deque()
        self._partial = np.empty(0, np.int16)
        self._media: Any = None
        self.clock: Any = None
        self._pending_dtmf = ""
        self.dropped_samples = 0
        self._call_rate = 8000
        #: Why the media stopped, set just before :meth:`stop` (``ISession.stop_reason``).
        self.stop_reason: str | None = None

    def attach(self, media: Any, clock: Any) -> None:
        """Bind the session to its call's RTP stream (called by ``CallMedia.start``)."""
        self._media = media
        self.clock = clock
        if self._pending_dtmf:
            digits, self._pending_dtmf = self._pending_dtmf, ""
            media.send_dtmf(digits)

    @property
    def sample_rate(self) -> int:
        """Rate (Hz) of the audio this session hears and sends: the call's codec's (8000
        until the call is negotiated).  A subclass that wants one rate whatever the codec
        declares it as a class attribute (``sample_rate = 16000``) and is resampled to."""
        return self._call_rate

    @property
    def frame_size(self) -> int:
        """Samples in one 20 ms frame at :attr:`sample_rate`."""
        return self.sample_rate // 50

    def use_call_rate(self, call_rate: int) -> int:
        """Called by the RTP stream when the call's audio rate is known or changes (a
        re-INVITE to another codec, before ``media_changed``); returns the rate this session
        works at (the stream resamples between the two).  A session that follows the call
        takes *call_rate*, and audio it has queued is resampled to it."""
        if not isinstance(inspect.getattr_static(type(self), "sample_rate"), property):
            return int(self.sample_rate)
        old = self._call_rate
        if call_rate != old:
            self._call_rate = call_rate
            self._rate_changed(old, call_rate)
        return call_rate

    def _rate_changed(self, old: int, new: int) -> None:
        """The session's rate went from *old* to *new*: convert what is queued to send."""
        if not self._frames and not len(self._partial):
            return
        queued = np.concatenate([*self._frames, self._partial])
        self.clear_audio()
        self.send_audio(resample(queued, old, new))

    @property
    def stats(self) -> Any:
        """The call's RTP statistics (``voiptwisted.rtp.protocol.MediaStats``), or None."""
        return None if self._media is None else self._media.refresh_stats()

    @property
    def queued_samples(self) -> int:
        """Samples waiting to be sent."""
        return len(self._frames) * self.frame_size + len(self._partial)

    def start(self) -> None:
        """Called once when media starts."""

    def stop(self) -> None:
        """Called once when the call's media stops; :attr:`stop_reason` says why."""

    def audio_received(self, samples: np.ndarray) -> None:
        """Called with each decoded 20 ms frame (int16, mono) from the remote party."""

    def dtmf_received(self, digit: str) -> None:
        """Called once per key the remote party pressed (RFC 4733)."""

    def media_changed(self, direction: str) -> None:
        """Called when the far end changed the media mid-call (re-INVITE: hold, resume,
        a new address or codec); *direction* is ours now (``"recvonly"``: on hold)."""

    def send_audio(self, samples: Any) -> None:
        """Queue int16 mono audio at ``sample_rate``; returns at once."""
        data = np.asarray(samples)
        if data.dtype != np.int16:
            data = np.clip(np.round(data), -32768, 32767).astype(np.int16)
        data = data.ravel()
        room = int(self.max_queue_seconds * self.sample_rate) - self.queued_samples
        if len(data) > room:
            self.dropped_samples += len(data) - max(room, 0)
            data = data[: max(room, 0)]
        if len(self._partial):
            data = np.concatenate((self._partial, data))
        whole = len(data) - len(data) % self.frame_size
        for start in range(0, whole, self.frame_size):
            self._frames.append(data[start : start + self.frame_size])
        self._partial = data[whole:].copy()

    def next_frame(self) -> np.ndarray | None:
        """The next 20 ms frame to send, or None for silence (nothing queued).

        A trailing partial frame is padded with silence once nothing else is queued.
        """
        if self._frames:
            return self._frames.popleft()
        if len(self._partial):
            frame = np.zeros(self.frame_size, np.int16)
            frame[: len(self._partial)] = self._partial
            self._partial = np.empty(0, np.int16)
            return frame
        return None

    def clear_audio(self) -> None:
        """Drop everything queued for sending."""
        self._frames.clear()
        self._partial = np.empty(0, np.int16)

    def send_dtmf(self, digits: str) -> None:
        """Queue RFC 4733 telephone-events for *digits* (``0-9 * # A-D``)."""
        bad = set(digits) - _DTMF_DIGITS
        if bad:
            raise ValueError(f"not DTMF digits: {''.join(sorted(bad))!r}")
        if self._media is None:
            self._pending_dtmf += digits
        else:
            self._media.send_dtmf(digits)

    def hang_up(self) -> Any:
        """End the call from the media side: the dialog sends BYE."""
        return self.dialog.bye()


class EchoSession(Session):
    """Sends back what it hears, at most three frames (60 ms) later.

    Older frames are dropped when a burst arrives, so the echo delay never grows.
    """

    max_delay_frames = 3

    def audio_received(self, samples: np.ndarray) -> None:
        self._frames.append(samples)
        while len(self._frames) > self.max_delay_frames:
            self._frames.popleft()
            self.dropped_samples += self.frame_size


class PlaybackSession(Session):
    """Plays a WAV file (any rate and channel count, resampled to mono at the call's rate).

    When the file ends the call is hung up, unless ``loop`` is true.
    """

    def __init__(self, dialog: Any, path: str | os.PathLike[str], loop: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(dialog, **kwargs)
        self.path = os.fspath(path)
        self.loop = loop
        samples, self._file_rate = read_wav(path)
        self._file_audio = to_mono(samples)
        self._audio = resample(self._file_audio, self._file_rate, self.sample_rate)
        self._position = 0
        self._finished = False

    def _rate_changed(self, old: int, new: int) -> None:
        """Resample the file (from its own rate, not from the old call rate) and carry on
        from the same point in time."""
        super()._rate_changed(old, new)
        self._audio = resample(self._file_audio, self._file_rate, new)
        self._position = self._position * new // old

    def next_frame(self) -> np.ndarray | None:
        queued = super().next_frame()
        if queued is not None:
            return queued
        audio = self._audio
        if self._position >= len(audio):
            if self.loop and len(audio):
                self._position = 0
            else:
                self._finish()
                return None
        frame = audio[self._position : self._position + self.frame_size]
        self._position += self.frame_size
        if len(frame) < self.frame_size:
            frame = np.concatenate((frame, np.zeros(self.frame_size - len(frame), np.int16)))
        return frame

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self.clock is not None:
            self.clock.callLater(0, self.hang_up)
        else:
            self.hang_up()


class RecordingSession(Session):
    """Records a call: one two-channel WAV (far end left, near end right) plus DTMF JSON.

    The WAV and ``<name>.json`` (``[{"digit": "5", "time": 1.24}, ...]``, seconds
    since media start) are written to *directory* when the call's media stops.
    The far-end channel is the received frames in playout order; the near-end
    channel is one frame per 20 ms tick (silence when nothing was sent).
    Recording stops after ``max_seconds`` to bound memory.
    """

    max_seconds = 3600.0

    def __init__(self, dialog: Any, directory: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(dialog, **kwargs)
        self.directory = os.fspath(directory)
        call_id = getattr(dialog, "call_id", None) or uuid.uuid4().hex
        self.name = re.sub(r"[^A-Za-z0-9._-]", "_", str(call_id))[:100]
        self.wav_path = os.path.join(self.directory, f"{self.name}.wav")
        self.json_path = os.path.join(self.directory, f"{self.name}.json")
        self._far: list[np.ndarray] = []
        self._near: list[np.ndarray] = []
        self.digits: list[dict[str, Any]] = []
        self._started_at: float | None = None
        self._max_frames = int(self.max_seconds * 50)
        self._written = False

    def start(self) -> None:
        self._started_at = self.clock.seconds() if self.clock is not None else 0.0

    def audio_received(self, samples: np.ndarray) -> None:
        if len(self._far) < self._max_frames:
            self._far.append(samples)

    def next_frame(self) -> np.ndarray | None:
        frame = super().next_frame()
        if len(self._near) < self._max_frames:
            self._near.append(frame if frame is not None else np.zeros(self.frame_size, np.int16))
        return frame

    def dtmf_received(self, digit: str) -> None:
        now = self.clock.seconds() if self.clock is not None else 0.0
        start = self._started_at if self._started_at is not None else now
        if len(self.digits) < 10_000:
            self.digits.append({"digit": digit, "time": round(now - start, 3)})

    def stop(self) -> None:
        if self._written:
            return
        self._written = True
        far = np.concatenate(self._far) if self._far else np.empty(0, np.int16)
        near = np.concatenate(self._near) if self._near else np.empty(0, np.int16)
        length = max(len(far), len(near))
        stereo = np.zeros((length, 2), np.int16)
        stereo[: len(far), 0] = far
        stereo[: len(near), 1] = near
        os.makedirs(self.directory, exist_ok=True)
        write_wav(self.wav_path, stereo, self.sample_rate)
        with open(self.json_path, "w", encoding="utf-8") as handle:
            json.dump(self.digits, handle)
        self.log.info("recorded {name}: {seconds:.1f} s, {n} DTMF digits", name=self.name,
                      seconds=length / self.sample_rate, n=len(self.digits))
