"""Tests for voiptwisted.codecs.plc: repeat-and-fade concealment for G.711 and G.722."""

from __future__ import annotations

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from tests.codecs.signals import frames, speech
from voiptwisted.codecs.plc import RepeatFadeConcealer

LEVEL = 16000
FULL = np.full(160, LEVEL, dtype=np.int16)


class RepeatFadeTests(SynchronousTestCase):
    def test_silence_before_any_good_frame(self) -> None:
        concealed = RepeatFadeConcealer(160).conceal()
        np.testing.assert_array_equal(concealed, np.zeros(160, np.int16))

    def test_repeats_last_good_frame_faded_6db_per_frame_then_silence(self) -> None:
        plc = RepeatFadeConcealer(160)
        self.assertIs(plc.good(FULL), FULL)
        out = [plc.conceal() for _ in range(5)]
        # Each concealed frame ends 6 dB (x0.5) below where it starts; the third ends at 0.
        self.assertLess(abs(out[0][0] / LEVEL - 1.0), 0.01)
        self.assertLess(abs(out[0][-1] / LEVEL - 0.5), 0.01)
        self.assertLess(abs(out[1][-1] / LEVEL - 0.25), 0.01)
        self.assertEqual(out[2][-1], 0)
        for frame in out[3:]:
            np.testing.assert_array_equal(frame, np.zeros(160, np.int16))
        for frame in out:
            self.assertTrue(np.all(np.diff(frame.astype(int)) <= 0))  # a ramp, no step up

    def test_fade_is_continuous_across_concealed_frames(self) -> None:
        plc = RepeatFadeConcealer(160)
        plc.good(FULL)
        first, second = plc.conceal(), plc.conceal()
        self.assertLessEqual(abs(int(first[-1]) - int(second[0])), LEVEL // 160 + 1)

    def test_repeats_the_audio_itself(self) -> None:
        voice = speech(8000, top=3400)
        plc = RepeatFadeConcealer(160)
        last = frames(voice, 160)[10]
        plc.good(last)
        concealed = plc.conceal().astype(np.float64)
        reference = last.astype(np.float64)
        correlation = np.dot(concealed, reference) / np.sqrt(
            np.dot(concealed, concealed) * np.dot(reference, reference)
        )
        self.assertGreater(correlation, 0.9)

    def test_good_frame_resets_the_fade(self) -> None:
        plc = RepeatFadeConcealer(160)
        plc.good(FULL)
        for _ in range(4):
            plc.conceal()
        plc.good(FULL)
        self.assertLess(abs(plc.conceal()[0] / LEVEL - 1.0), 0.01)

    def test_short_packets_fill_the_repeated_frame(self) -> None:
        plc = RepeatFadeConcealer(160, fade_db_per_frame=0.0001)
        plc.good(np.full(80, 100, np.int16))
        plc.good(np.full(80, 200, np.int16))
        concealed = plc.conceal()
        self.assertTrue(np.all(np.abs(concealed[:80] - 100) <= 1))
        self.assertTrue(np.all(np.abs(concealed[80:] - 200) <= 1))

    def test_short_packet_after_a_whole_frame_leaves_that_frame_alone(self) -> None:
        """A whole frame is kept by reference (no copy per packet): shorter packets after
        it must build a new array, not shift samples inside the caller's frame."""
        plc = RepeatFadeConcealer(160, fade_db_per_frame=0.0001)
        whole = np.full(160, 100, np.int16)
        plc.good(whole)
        plc.good(np.full(80, 200, np.int16))
        np.testing.assert_array_equal(whole, np.full(160, 100, np.int16))
        concealed = plc.conceal()
        self.assertTrue(np.all(np.abs(concealed[:80] - 100) <= 1))
        self.assertTrue(np.all(np.abs(concealed[80:] - 200) <= 1))

    def test_short_packet_first_is_preceded_by_silence(self) -> None:
        plc = RepeatFadeConcealer(160, fade_db_per_frame=0.0001)
        plc.good(np.full(40, 300, np.int16))
        concealed = plc.conceal()
        np.testing.assert_array_equal(concealed[:120], np.zeros(120, np.int16))
        self.assertTrue(np.all(np.abs(concealed[120:] - 300) <= 1))

    def test_long_packets_keep_their_tail(self) -> None:
        plc = RepeatFadeConcealer(160, fade_db_per_frame=0.0001)
        plc.good(np.concatenate([np.full(160, 7, np.int16), np.full(160, 300, np.int16)]))
        self.assertTrue(np.all(np.abs(plc.conceal() - 300) <= 1))

    def test_custom_length_of_concealment(self) -> None:
        plc = RepeatFadeConcealer(160, max_frames=1)
        plc.good(FULL)
        self.assertGreater(plc.conceal()[0], 0)
        np.testing.assert_array_equal(plc.conceal(), np.zeros(160, np.int16))

    def test_bad_parameters(self) -> None:
        for kwargs in ({"frame_samples": 0}, {"frame_samples": 160, "max_frames": -1}):
            self.assertRaises(ValueError, RepeatFadeConcealer, **kwargs)
        self.assertRaises(ValueError, RepeatFadeConcealer, 160, fade_db_per_frame=0)
