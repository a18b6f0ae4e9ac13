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

import datetime
import inspect
import json
import os
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from voiptwisted.interfaces import ISession
from voiptwisted.media.wav import WavAppender, create_private, read_wav, resample, to_mono

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


class _InOrder:
    """Runs jobs handed to a thread pool one at a time, in the order they were numbered.

    A recording has at most two jobs out at once (a batch and the final one); a pool may
    start them on two threads, so the later one waits for its turn here.
    """

    def __init__(self) -> None:
        self._turn = threading.Condition()
        self._issued = 0
        self._done = 0

    def ticket(self) -> int:
        """The next job's number (called in the reactor thread)."""
        self._issued += 1
        return self._issued - 1

    def run(self, ticket: int, job: Callable[[], Any]) -> Any:
        with self._turn:
            self._turn.wait_for(lambda: self._done == ticket)
        try:
            return job()
        finally:
            with self._turn:
                self._done += 1
                self._turn.notify_all()


def _safe_suffix(call_id: object) -> str:
    """The Call-ID as a file-name part: ``[A-Za-z0-9._-]`` only, at most 64 characters,
    never starting with ``.`` (a hidden file) or ``-`` (read as an option)."""
    if not call_id:
        return ""
    return _UNSAFE_NAME_CHARS.sub("_", str(call_id)[:64]).lstrip(".-")


_UNSAFE_NAME_CHARS = re.compile(r"[^A-Za-z0-9._-]")


class RecordingSession(Session):
    """Records a call: one two-channel WAV (far end left, what we sent right) plus DTMF JSON.

    The two channels are aligned in time: each 20 ms pacer tick adds one stereo frame,
    the frame we sent on that tick on the right and the far end's next received frame on
    the left (up to ``far_queue_frames`` received frames wait, so network jitter does not
    shift them; silence when none arrived).  Ticks with silence on both channels are only
    counted, and written as zeros.  The WAV is written as the call goes: every
    ``flush_seconds`` the new audio goes to disk in the reactor's thread pool, so the
    reactor never waits for the disk, and the header's sizes are patched each time (the
    file is a valid WAV of the call so far).  At most ``max_buffer_seconds`` of audio
    waits in memory: should the disk fall that far behind, further audio is recorded as
    silence and counted in :attr:`lost_frames`.  Recording stops after ``max_seconds``.

    Files are named ``<UTC time>-<random id>-<Call-ID>.wav`` and ``.json`` (the DTMF
    digits, ``[{"digit": "5", "time": 1.24}, ...]``, seconds since media start, written
    when the media stops); the Call-ID part is sanitised and never starts with ``.`` or
    ``-``.  Both are created owner-only (0600) and never overwrite a file (``O_EXCL``),
    in *directory*, created owner-only (0700) if missing.  :attr:`finished` fires with the
    WAV's path once both files are complete (None if they could not be written: logged).
    With a clock that has no thread pool (``task.Clock`` in tests) the writes happen at
    once, in the caller's thread.
    """

    max_seconds = 3600.0
    flush_seconds = 1.0
    max_buffer_seconds = 5.0
    far_queue_frames = 10

    def __init__(self, dialog: Any, directory: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(dialog, **kwargs)
        self.directory = os.fspath(directory)
        self.call_id_suffix = _safe_suffix(getattr(dialog, "call_id", None))
        self.name: str | None = None
        self.wav_path: str | None = None
        self.json_path: str | None = None
        self.digits: list[dict[str, Any]] = []
        self.lost_frames = 0
        self.finished: Deferred[str | None] = Deferred()
        self._started_at: float | None = None
        self._stopped = False
        self._broken = False
        self._behind = False
        self._far: deque[np.ndarray] = deque()
        self._pending: list[bytearray | int] = []
        self._held_bytes = 0
        self._writing = False
        self._ticks = 0
        self._unflushed = 0
        self._size_for_rate()
        self._order = _InOrder()
        self._wav: WavAppender | None = None

    def _size_for_rate(self) -> None:
        """Frame buffers and bounds for the session's rate (known once attached to a call:
        the WAV is written at the call's rate, 8, 16 or 48 kHz)."""
        self._stereo = np.zeros((self.frame_size, 2), "<i2")
        self._frame_bytes = self._stereo.nbytes
        self._max_ticks = int(self.max_seconds * self.sample_rate / self.frame_size)
        self._flush_ticks = max(1, int(self.flush_seconds * self.sample_rate / self.frame_size))
        self._max_held = int(self.max_buffer_seconds * self.sample_rate) * 4

    @property
    def buffered_bytes(self) -> int:
        """Bytes of recorded audio in memory: not yet written, or being written."""
        return self._held_bytes

    def start(self) -> None:
        self._size_for_rate()
        self._started_at = self.clock.seconds() if self.clock is not None else 0.0
        now = self.clock.seconds() if self.clock is not None else time.time()
        stamp = datetime.datetime.fromtimestamp(now, datetime.UTC)
        name = f"{stamp:%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"
        if self.call_id_suffix:
            name += f"-{self.call_id_suffix}"
        self.name = name
        self.wav_path = os.path.join(self.directory, f"{name}.wav")
        self.json_path = os.path.join(self.directory, f"{name}.json")
        self._in_thread(self._create).addErrback(self._failed, "cannot create")

    def audio_received(self, samples: np.ndarray) -> None:
        self._far.append(samples)
        if len(self._far) > self.far_queue_frames:
            self._far.popleft()
            self.lost_frames += 1

    def next_frame(self) -> np.ndarray | None:
        frame = super().next_frame()
        if self.name is not None and not (self._stopped or self._broken) and (
            self._ticks < self._max_ticks
        ):
            self._record(self._far.popleft() if self._far else None, frame)
        return frame

    def dtmf_received(self, digit: str) -> None:
        now = self.clock.seconds() if self.clock is not None else 0.0
        start = self._started_at if self._started_at is not None else now
        if len(self.digits) < 10_000:
            self.digits.append({"digit": digit, "time": round(now - start, 3)})

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.name is None:
            self.finished.callback(None)
            return
        pending, self._pending = self._pending, []
        digits = json.dumps(self.digits).encode()
        seconds = self._ticks * self.frame_size / self.sample_rate
        d = self._in_thread(lambda: self._finish(pending, digits))
        d.addCallbacks(self._finished, self._failed, callbackArgs=(seconds,),
                       errbackArgs=("cannot finish",))

    # -- recording, in the reactor thread ----------------------------------------------------
    def _record(self, far: np.ndarray | None, near: np.ndarray | None) -> None:
        """One tick: a stereo frame, or one more silent frame when both sides are silent."""
        self._ticks += 1
        far_silent = far is None or not far.any()
        near_silent = near is None or not near.any()
        if far_silent and near_silent:
            self._add_silence()
        elif self._held_bytes + self._frame_bytes > self._max_held:
            if not self._behind:
                self._behind = True
                self.log.warn("recording {name}: the disk is behind; recording silence",
                              name=self.name)
            self.lost_frames += 1
            self._add_silence()
        else:
            stereo = self._stereo
            stereo[:, 0] = 0 if far_silent else far
            stereo[:, 1] = 0 if near_silent else near
            last = self._pending[-1] if self._pending else None
            if isinstance(last, bytearray):
                last += stereo.tobytes()
            else:
                self._pending.append(bytearray(stereo.tobytes()))
            self._held_bytes += self._frame_bytes
        self._unflushed += 1
        if self._unflushed >= self._flush_ticks:
            self._flush()

    def _add_silence(self) -> None:
        if self._pending and isinstance(self._pending[-1], int):
            self._pending[-1] += 1
        else:
            self._pending.append(1)

    def _flush(self) -> None:
        """Hand what was recorded to a thread, unless the previous batch is still being
        written (then it waits for the next flush, bounded by ``max_buffer_seconds``)."""
        self._unflushed = 0
        if self._writing or not self._pending:
            return
        batch, self._pending = self._pending, []
        size = sum(len(part) for part in batch if not isinstance(part, int))
        self._writing = True
        d = self._in_thread(lambda: self._write(batch))
        d.addErrback(self._failed, "cannot write")
        d.addBoth(self._written, size)

    def _written(self, _result: object, size: int) -> None:
        self._writing = False
        self._held_bytes -= size

    def _in_thread(self, job: Callable[[], Any]) -> Deferred[Any]:
        """Run *job* in the reactor's thread pool, after every job handed over before it."""
        ticket = self._order.ticket()
        reactor = self.clock
        if IReactorThreads.providedBy(reactor):
            return deferToThreadPool(reactor, reactor.getThreadPool(), self._order.run, ticket,
                                     job)
        return maybeDeferred(self._order.run, ticket, job)

    def _failed(self, failure: Failure, what: str) -> None:
        """A file error: logged once; the recording stops (what was written stays)."""
        self.log.error("recording {name}: {what} {path}: {error}", name=self.name, what=what,
                       path=self.wav_path, error=failure.getErrorMessage())
        self._broken = True
        if what == "cannot finish":
            self.finished.callback(None)

    def _finished(self, written: bool, seconds: float) -> None:
        if not written:
            self.finished.callback(None)
            return
        self.log.info("recorded {name}: {seconds:.1f} s, {n} DTMF digits", name=self.name,
                      seconds=seconds, n=len(self.digits))
        self.finished.callback(self.wav_path)

    # -- file I/O, in a pool thread, one job at a time ---------------------------------------
    def _create(self) -> None:
        assert self.wav_path is not None
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._wav = WavAppender(self.wav_path, 2, self.sample_rate)

    def _write(self, batch: list[bytearray | int]) -> None:
        wav = self._wav
        if wav is None:
            return
        for part in batch:
            if isinstance(part, int):
                wav.append_silence(part * self.frame_size)
            else:
                wav.append(part)
        wav.update_header()

    def _finish(self, batch: list[bytearray | int], digits: bytes) -> bool:
        """The last batch, the final header, then the JSON; False if there is no WAV."""
        wav = self._wav
        if wav is None:
            return False
        try:
            self._write(batch)
        finally:
            self._wav = None
            wav.close()
        assert self.json_path is not None
        with os.fdopen(create_private(self.json_path), "wb") as handle:
            handle.write(digits)
        return True
