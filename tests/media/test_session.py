"""Tests for voiptwisted.media.session (ISession implementations) and voiptwisted.media.wav."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import wave

import numpy as np
from twisted.internet import task
from twisted.trial import unittest
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
