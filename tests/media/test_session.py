"""Tests for voiptwisted.media.session (ISession implementations) and voiptwisted.media.wav."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
import tracemalloc
import wave
from typing import Any
from unittest import mock

import numpy as np
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from voiptwisted.interfaces import ISession
from voiptwisted.media.session import EchoSession, PlaybackSession, RecordingSession, Session
from voiptwisted.media.wav import WavError, load_mono, read_wav, resample, write_wav


class FakeDialog:
    call_id = "abc@host/../x"

    def __init__(self) -> None:
        self.byes = 0

    def bye(self) -> str:
        self.byes += 1
        return "deferred"


class FakeMedia:
    def __init__(self) -> None:
        self.dtmf: list[str] = []

    def send_dtmf(self, digits: str) -> None:
        self.dtmf.append(digits)

    def refresh_stats(self) -> str:
        return "stats"


class TempDirMixin:
    """Temporary files outside the working directory (pytest runs from the repo root)."""

    def tmp(self, name: str = "x.wav") -> str:
        directory = tempfile.mkdtemp(prefix="voiptwisted-test-")
        self.addCleanup(shutil.rmtree, directory, True)  # type: ignore[attr-defined]
        return os.path.join(directory, name)


def tone(freq: float, seconds: float, rate: int, amplitude: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()])


class SessionTests(unittest.SynchronousTestCase):
    def test_provides_isession(self) -> None:
        for session in (Session(FakeDialog()), EchoSession(FakeDialog())):
            self.assertTrue(verifyObject(ISession, session))

    def test_unknown_kwargs_refused(self) -> None:
        with self.assertRaises(TypeError):
            Session(FakeDialog(), bogus=1)

    def test_send_audio_frames(self) -> None:
        """send_audio splits into 160-sample frames; a trailing part is padded with silence."""
        session = Session(FakeDialog())
        session.send_audio(np.arange(400, dtype=np.int16))
        first, second, third = (session.next_frame() for _ in range(3))
        self.assertEqual([len(first), len(second), len(third)], [160, 160, 160])
        np.testing.assert_array_equal(third[:80], np.arange(320, 400))
        np.testing.assert_array_equal(third[80:], 0)
        self.assertIsNone(session.next_frame())

    def test_send_audio_float_clipped(self) -> None:
        session = Session(FakeDialog())
        session.send_audio(np.full(160, 1e9))
        self.assertEqual(session.next_frame().dtype, np.int16)

    def test_queue_bounded(self) -> None:
        """send_audio returns at once and never grows memory without bound."""
        session = Session(FakeDialog())
        session.max_queue_seconds = 0.1
        session.send_audio(np.zeros(8000, np.int16))
        self.assertEqual(session.queued_samples, 800)
        self.assertEqual(session.dropped_samples, 7200)

    def test_dtmf_validation_and_forwarding(self) -> None:
        session = Session(FakeDialog())
        with self.assertRaises(ValueError):
            session.send_dtmf("12x")
        session.send_dtmf("12")
        media = FakeMedia()
        session.attach(media, task.Clock())
        session.send_dtmf("#")
        self.assertEqual(media.dtmf, ["12", "#"])
        self.assertEqual(session.stats, "stats")

    def test_hang_up(self) -> None:
        dialog = FakeDialog()
        self.assertEqual(Session(dialog).hang_up(), "deferred")
        self.assertEqual(dialog.byes, 1)


class EchoSessionTests(unittest.SynchronousTestCase):
    def test_echo_returns_frames(self) -> None:
        session = EchoSession(FakeDialog())
        frame = np.full(160, 7, np.int16)
        session.audio_received(frame)
        np.testing.assert_array_equal(session.next_frame(), frame)

    def test_delay_bounded(self) -> None:
        """Issue 4 item 7: at most 60 ms later; a burst drops the oldest frames."""
        session = EchoSession(FakeDialog())
        for value in range(10):
            session.audio_received(np.full(160, value, np.int16))
        self.assertEqual(session.queued_samples, 3 * 160)
        self.assertEqual(int(session.next_frame()[0]), 7)


class PlaybackSessionTests(TempDirMixin, unittest.TestCase):
    def write(self, samples: np.ndarray, rate: int) -> str:
        path = self.tmp()
        write_wav(path, samples, rate)
        return path

    def test_resampled_stereo_44k(self) -> None:
        """Any rate and channel count is played as 8 kHz mono with the same pitch."""
        mono = tone(440, 0.5, 44100)
        path = self.write(np.stack([mono, mono], axis=1), 44100)
        session = PlaybackSession(FakeDialog(), path)
        clock = task.Clock()
        session.attach(FakeMedia(), clock)
        frames = []
        while (frame := session.next_frame()) is not None:
            frames.append(frame)
        audio = np.concatenate(frames)
        self.assertEqual(len(frames), 25)
        self.assertLess(abs(dominant_frequency(audio, 8000) - 440), 5)
        self.assertGreater(np.abs(audio).max(), 6000)

    def test_hangs_up_at_end(self) -> None:
        dialog = FakeDialog()
        session = PlaybackSession(dialog, self.write(tone(300, 0.05, 8000), 8000))
        clock = task.Clock()
        session.attach(FakeMedia(), clock)
        frames = [session.next_frame() for _ in range(5)]
        self.assertEqual([f is None for f in frames], [False] * 3 + [True] * 2)
        self.assertEqual(dialog.byes, 0)
        clock.advance(0)
        self.assertEqual(dialog.byes, 1)

    def test_loop(self) -> None:
        dialog = FakeDialog()
        session = PlaybackSession(dialog, self.write(tone(300, 0.04, 8000), 8000), loop=True)
        session.attach(FakeMedia(), task.Clock())
        frames = [session.next_frame() for _ in range(10)]
        self.assertTrue(all(f is not None for f in frames))
        np.testing.assert_array_equal(frames[0], frames[2])
        self.assertEqual(dialog.byes, 0)

    def test_not_a_wav(self) -> None:
        path = self.tmp()
        with open(path, "wb") as handle:
            handle.write(b"RIFF garbage")
        with self.assertRaises(WavError):
            PlaybackSession(FakeDialog(), path)


class RecordingSessionTests(TempDirMixin, unittest.TestCase):
    def test_wav_and_json(self) -> None:
        """Issue 4 item 7: two channels (far L, near R) and DTMF with timestamps beside it."""
        directory = self.tmp()
        session = RecordingSession(FakeDialog(), directory)
        clock = task.Clock()
        session.attach(FakeMedia(), clock)
        session.start()
        session.send_audio(np.full(320, 500, np.int16))
        for _ in range(3):
            session.audio_received(np.full(160, -900, np.int16))
            session.next_frame()
            clock.advance(0.02)
        session.dtmf_received("5")
        clock.advance(1.0)
        session.dtmf_received("#")
        session.stop()
        session.stop()
        self.assertEqual(os.path.dirname(session.wav_path), directory)
        self.assertNotIn("/", session.name)
        samples, rate = read_wav(session.wav_path)
        self.assertEqual((rate, samples.shape), (8000, (480, 2)))
        self.assertTrue((samples[:, 0] == -900).all())
        self.assertEqual(samples[:320, 1].tolist(), [500] * 320)
        self.assertTrue((samples[320:, 1] == 0).all())
        with open(session.json_path) as handle:
            digits = json.load(handle)
        self.assertEqual(digits, [{"digit": "5", "time": 0.06}, {"digit": "#", "time": 1.06}])


class HeldThreadPool:
    """A thread pool whose jobs wait until the test runs them: a disk that is slow."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Any, Any, tuple[Any, ...]]] = []

    def callInThreadWithCallback(self, on_result: Any, f: Any, *args: Any) -> None:
        self.jobs.append((on_result, f, args))

    def run_all(self) -> None:
        while self.jobs:
            on_result, f, args = self.jobs.pop(0)
            try:
                result = f(*args)
            except Exception:
                from twisted.python.failure import Failure

                on_result(False, Failure())
            else:
                on_result(True, result)


@implementer(IReactorThreads)
class ThreadedClock(task.Clock):
    """task.Clock with a thread pool the test controls (``callFromThread`` runs at once)."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = HeldThreadPool()

    def getThreadPool(self) -> HeldThreadPool:
        return self.pool

    def callFromThread(self, f: Any, *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class CallIDDialog(FakeDialog):
    def __init__(self, call_id: str) -> None:
        super().__init__()
        self.call_id = call_id


class BoundedRecordingTests(TempDirMixin, unittest.TestCase):
    """Issue 17: recordings are written as the call goes, bounded in memory, safely named."""

    def recorder(self, directory: str, clock: Any, call_id: str = "abc@host") -> RecordingSession:
        session = RecordingSession(CallIDDialog(call_id), directory)
        session.log = Logger(observer=self.events.append)
        session.attach(FakeMedia(), clock)
        session.start()
        return session

    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []

    def ticks(self, session: RecordingSession, clock: task.Clock, n: int) -> None:
        for _ in range(n):
            session.next_frame()
            clock.advance(0.02)

    def test_long_silent_call_does_not_grow(self) -> None:
        """A call with no RTP either way: memory does not grow per tick (it grew 2.7 MB a
        minute); the silence reaches the file as zeros, a second at a time."""
        directory = os.path.dirname(self.tmp())
        clock = task.Clock()
        session = self.recorder(directory, clock)
        self.ticks(session, clock, 3000)  # one minute: warm-up
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before, _ = tracemalloc.get_traced_memory()
        size_before = os.path.getsize(session.wav_path)
        self.ticks(session, clock, 30_000)  # ten more minutes
        after, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        # The old code kept 320 bytes a tick: 9.6 MB here.  A few KB of noise is allowed.
        self.assertLess(after - before, 100_000)
        self.assertEqual(session.buffered_bytes, 0)
        self.assertEqual(os.path.getsize(session.wav_path) - size_before, 30_000 * 640)
        session.stop()
        samples, rate = read_wav(self.successResultOf(session.finished))
        self.assertEqual((rate, samples.shape), (8000, (33_000 * 160, 2)))
        self.assertFalse(samples.any())

    def test_content_across_flushes_time_aligned(self) -> None:
        """Audio, silence and gaps in the far end's RTP land where they happened: left the
        far end's frames (a missing one is silence), right what we sent each tick."""
        directory = os.path.dirname(self.tmp())
        clock = task.Clock()
        session = self.recorder(directory, clock)
        expected_far: list[np.ndarray] = []
        expected_near: list[np.ndarray] = []
        rng = np.random.default_rng(17)
        for tick in range(260):  # 5.2 s: several flushes, silent runs inside and across them
            far = rng.integers(-3000, 3000, 160).astype(np.int16)
            near = rng.integers(-3000, 3000, 160).astype(np.int16)
            far_sends = tick % 7 != 3 and not 100 <= tick < 180
            near_sends = tick % 5 != 0 and not 120 <= tick < 200
            if far_sends:
                session.audio_received(far)
            if near_sends:
                session.send_audio(near)
            expected_far.append(far if far_sends else np.zeros(160, np.int16))
            expected_near.append(near if near_sends else np.zeros(160, np.int16))
            session.next_frame()
            clock.advance(0.02)
            if tick == 130:
                session.dtmf_received("7")
        session.stop()
        self.assertEqual(self.successResultOf(session.finished), session.wav_path)
        samples, _ = read_wav(session.wav_path)
        self.assertEqual(samples[:, 0].tolist(), np.concatenate(expected_far).tolist())
        self.assertEqual(samples[:, 1].tolist(), np.concatenate(expected_near).tolist())
        with open(session.json_path) as handle:
            self.assertEqual(json.load(handle), [{"digit": "7", "time": 2.62}])
        self.assertEqual(session.lost_frames, 0)

    def test_jitter_queue_is_bounded(self) -> None:
        """A burst of far-end frames with no ticks keeps only ``far_queue_frames``."""
        directory = os.path.dirname(self.tmp())
        session = self.recorder(directory, task.Clock())
        for _ in range(1000):
            session.audio_received(np.ones(160, np.int16))
        self.assertEqual(len(session._far), session.far_queue_frames)
        self.assertEqual(session.lost_frames, 1000 - session.far_queue_frames)

    def test_file_io_only_in_the_thread_pool_and_bounded_when_disk_is_slow(self) -> None:
        """The reactor never touches the file: every create/write/close is a thread-pool
        job.  With the writer stuck, memory stops at ``max_buffer_seconds`` of audio, later
        audio is recorded as silence (counted), and the file still has every tick."""
        directory = os.path.join(os.path.dirname(self.tmp()), "new", "calls")
        clock = ThreadedClock()
        session = self.recorder(directory, clock)
        self.assertFalse(os.path.exists(directory))  # creating it is a job too
        clock.pool.run_all()
        self.assertTrue(os.path.exists(session.wav_path))
        tone_frame = np.full(160, 1000, np.int16)
        for _ in range(100):
            session.audio_received(tone_frame)
            session.next_frame()
        self.assertEqual(len(clock.pool.jobs), 1)  # two flushes due; one batch out at a time
        self.assertEqual(os.path.getsize(session.wav_path), 44)
        stuck = clock.pool.jobs.pop()  # the disk stalls: this write does not return yet
        for _ in range(60 * 50):
            session.audio_received(tone_frame)
            session.next_frame()
        limit = int(session.max_buffer_seconds * 8000) * 4
        self.assertLessEqual(session.buffered_bytes, limit)
        self.assertGreater(session.buffered_bytes, limit - 1000)
        self.assertEqual(session.lost_frames, 3100 - limit // 640)
        self.assertEqual(clock.pool.jobs, [])
        self.assertTrue(any("disk is behind" in e["log_format"] for e in self.events))
        clock.pool.jobs.append(stuck)
        clock.pool.run_all()
        session.stop()
        clock.pool.run_all()
        samples, _ = read_wav(self.successResultOf(session.finished))
        self.assertEqual(len(samples), 3100 * 160)
        self.assertTrue((samples[: (limit // 640) * 160, 0] == 1000).all())
        self.assertFalse(samples[(limit // 640) * 160 :].any())

    def test_stop_writes_in_order_after_a_batch_in_flight(self) -> None:
        """stop() while a batch is still being written: the final job runs after it, and the
        header's sizes cover every tick."""
        directory = os.path.dirname(self.tmp())
        clock = ThreadedClock()
        session = self.recorder(directory, clock)
        for i in range(75):
            session.audio_received(np.full(160, i + 1, np.int16))
            session.next_frame()
        session.stop()
        self.assertNoResult(session.finished)
        self.assertEqual(len(clock.pool.jobs), 3)  # create, the first second, the final one
        clock.pool.run_all()
        samples, _ = read_wav(self.successResultOf(session.finished))
        self.assertEqual(samples[::160, 0].tolist(), list(range(1, 76)))
        self.assertFalse(samples[:, 1].any())

    def test_real_thread_pool(self) -> Deferred[None]:
        """With the running reactor the files are written by its thread pool."""
        directory = os.path.dirname(self.tmp())
        session = self.recorder(directory, reactor)
        for _ in range(120):
            session.audio_received(np.full(160, 5, np.int16))
            session.next_frame()
        session.stop()

        def check(path: str) -> None:
            samples, _ = read_wav(path)
            self.assertEqual(samples.shape, (120 * 160, 2))
            self.assertTrue((samples[:, 0] == 5).all())

        return session.finished.addCallback(check)

    def test_names_modes_and_no_overwrite(self) -> None:
        """Names are ``<UTC time>-<random id>-<Call-ID>``: two Call-IDs that sanitise alike
        (``victim-call_pbx.example`` / ``victim-call@pbx.example``) get two files, each its
        own call's; files 0600 in a 0700 directory created when missing."""
        directory = os.path.join(os.path.dirname(self.tmp()), "rec")
        clock = task.Clock()
        clock.advance(1796609624)  # 2026-12-07T02:13:44Z
        sessions = [
            self.recorder(directory, clock, "victim-call_pbx.example"),
            self.recorder(directory, clock, "victim-call@pbx.example"),
        ]
        for value, session in enumerate(sessions, 1):
            session.audio_received(np.full(160, value, np.int16))
            session.next_frame()
            session.stop()
        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)
        names = sorted(os.listdir(directory))
        self.assertEqual(len(names), 4)
        for value, session in enumerate(sessions, 1):
            name = os.path.basename(session.wav_path)
            self.assertRegex(name, r"^20261207T021344Z-[0-9a-f]{8}-victim-call_pbx\.example\.wav$")
            self.assertEqual(read_wav(session.wav_path)[0][0, 0], value)
            for path in (session.wav_path, session.json_path):
                self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)

    def test_existing_file_is_never_overwritten(self) -> None:
        """A file (or a symlink) already at the chosen name is left alone: the recording
        fails with one error line instead (O_EXCL, O_NOFOLLOW)."""
        directory = os.path.dirname(self.tmp())
        clock = task.Clock()
        target = os.path.join(directory, "elsewhere")
        with open(target, "wb") as handle:
            handle.write(b"precious")
        taken = "19700101T000000Z-00000000-abc_host"
        os.symlink(target, os.path.join(directory, f"{taken}.wav"))
        with mock.patch("voiptwisted.media.session.secrets.token_hex", return_value="00000000"):
            session = self.recorder(directory, clock)
        self.assertEqual(session.name, taken)
        self.ticks(session, clock, 100)
        session.stop()
        self.assertIsNone(self.successResultOf(session.finished))
        with open(target, "rb") as handle:
            self.assertEqual(handle.read(), b"precious")
        self.assertFalse(os.path.exists(os.path.join(directory, f"{taken}.json")))
        errors = [e for e in self.events if e["log_level"].name == "error"]
        self.assertEqual(len(errors), 1)

    def test_call_id_cannot_make_hidden_or_option_like_names(self) -> None:
        """A Call-ID starting with '.' (PJSIP's can) or '-' gives a suffix that does not;
        '/' and other characters become '_'; the suffix is at most 64 characters."""
        directory = os.path.dirname(self.tmp())
        for call_id, suffix in [
            (".Vq3xZ-pjsip", "Vq3xZ-pjsip"),
            ("-rf", "rf"),
            ("..--./x@h", "_x_h"),
            ("abc@host/../x", "abc_host_.._x"),
            ("x" * 300, "x" * 64),
        ]:
            session = self.recorder(directory, task.Clock(), call_id)
            self.assertEqual(session.call_id_suffix, suffix)
            self.assertTrue(session.name.endswith(f"-{suffix}"))
            self.assertEqual(os.path.dirname(session.wav_path), directory)
            self.assertFalse(session.name.startswith((".", "-")))
            session.stop()
        session = self.recorder(directory, task.Clock(), "")
        self.assertRegex(session.name, r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


class WavTests(TempDirMixin, unittest.TestCase):
    def test_sample_widths(self) -> None:
        """8, 16, 24 and 32-bit PCM all read as int16."""
        value = 0x1234
        for width, raw in (
            (1, bytes([0x12 + 128])),
            (2, value.to_bytes(2, "little", signed=True)),
            (3, (value << 8).to_bytes(3, "little", signed=True)),
            (4, (value << 16).to_bytes(4, "little", signed=True)),
        ):
            path = self.tmp()
            with wave.open(path, "wb") as handle:
                handle.setnchannels(1)
                handle.setsampwidth(width)
                handle.setframerate(8000)
                handle.writeframes(raw * 4)
            samples, _ = read_wav(path)
            expected = 0x1200 if width == 1 else value
            self.assertEqual(samples[:, 0].tolist(), [expected] * 4, width)

    def test_negative_24_bit(self) -> None:
        path = self.tmp()
        with wave.open(path, "wb") as handle:
            handle.setnchannels(1)
            handle.setsampwidth(3)
            handle.setframerate(8000)
            handle.writeframes((-256 * 100).to_bytes(3, "little", signed=True))
        samples, _ = read_wav(path)
        self.assertEqual(int(samples[0, 0]), -100)

    def test_resample_identity_and_length(self) -> None:
        audio = tone(200, 1.0, 16000)
        self.assertEqual(len(resample(audio, 16000, 8000)), 8000)
        self.assertIs(resample(audio, 8000, 8000).dtype, np.dtype(np.int16))
        path = self.tmp()
        write_wav(path, audio, 16000)
        self.assertEqual(len(load_mono(path, 8000)), 8000)
