"""Tests for voiptwisted.codecs.g722: G.722 over RTP (RFC 3551 §4.5.2) through PyAV/FFmpeg."""

from __future__ import annotations

import av
import numpy as np
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from twisted.trial.unittest import SynchronousTestCase

from tests.codecs.signals import aligned_correlation, band_fraction, frames, speech, tone
from voiptwisted.codecs.g711 import alaw_decode, alaw_encode
from voiptwisted.codecs.g722 import G722Decoder, G722Encoder

SPEECH = speech(16000)


def round_trip(samples: np.ndarray) -> np.ndarray:
    encoder, decoder = G722Encoder(), G722Decoder()
    return np.concatenate([decoder.decode(encoder.encode(f)) for f in frames(samples, 320)])


def resample(samples: np.ndarray, source: int, target: int) -> np.ndarray:
    """FFmpeg's band-limiting resampler, as a narrowband call path would use it."""
    resampler = AudioResampler(format="s16", layout="mono", rate=target)
    frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = source
    out = resampler.resample(frame) + resampler.resample(None)
    return np.concatenate([f.to_ndarray()[0] for f in out])


class G722PayloadFormatTests(SynchronousTestCase):
    """RFC 3551 §4.5.2: 16 kHz audio, 8000 Hz RTP clock, 4 bits per sample."""

    def test_rfc3551_4_5_2_clock_rate_is_half_the_sampling_rate(self) -> None:
        for cls in (G722Encoder, G722Decoder):
            self.assertEqual(cls.encoding_name, "G722")
            self.assertEqual(cls.payload_type, 9)
            self.assertEqual(cls.audio_rate, 16000)
            self.assertEqual(cls.clock_rate, 8000)
            self.assertEqual(cls.frame_samples, 320)
            self.assertEqual(cls.timestamp_step, 160)

    def test_rfc3551_4_5_2_twenty_ms_is_160_octets(self) -> None:
        encoder = G722Encoder()
        payloads = [encoder.encode(f) for f in frames(SPEECH, 320)]
        self.assertEqual({len(p) for p in payloads}, {160})
        self.assertEqual(len(G722Decoder().decode(payloads[0])), 320)

    def test_decoder_takes_other_packet_durations(self) -> None:
        decoded = G722Decoder().decode(bytes(80))
        self.assertEqual((decoded.dtype, decoded.shape), (np.dtype(np.int16), (160,)))

    def test_empty_payload_decodes_to_no_samples(self) -> None:
        self.assertEqual(len(G722Decoder().decode(b"")), 0)

    def test_encoder_takes_one_mono_frame_only(self) -> None:
        encoder = G722Encoder()
        for bad in (SPEECH[:319], SPEECH[:640], SPEECH[:640].reshape(2, 320)):
            self.assertRaises(ValueError, encoder.encode, bad)


class G722AudioTests(SynchronousTestCase):
    """The audio survives the codec, including what narrowband G.711 cannot carry."""

    def test_speech_round_trip_correlates_with_input(self) -> None:
        self.assertGreaterEqual(aligned_correlation(SPEECH, round_trip(SPEECH), 200), 0.8)

    def test_matches_ffmpeg_with_fresh_frames(self) -> None:
        """The encoder's reused frame gives what a fresh frame per call gives (state kept)."""
        ctx = av.CodecContext.create("g722", "w")
        ctx.sample_rate, ctx.layout, ctx.format = 16000, "mono", "s16"
        ctx.open()
        expected = []
        for f in frames(SPEECH, 320):
            frame = AudioFrame.from_ndarray(f.reshape(1, -1).copy(), format="s16", layout="mono")
            frame.sample_rate = 16000
            expected.append(b"".join(bytes(p) for p in ctx.encode(frame)))
        encoder = G722Encoder()
        self.assertEqual([encoder.encode(f) for f in frames(SPEECH, 320)], expected)

    def test_6khz_tone_survives(self) -> None:
        decoded = round_trip(tone(16000, 6000))[1600:]
        self.assertGreater(band_fraction(decoded, 16000, 5800, 6200), 0.9)
        self.assertGreater(np.abs(decoded).max(), 4000)

    def test_6khz_tone_does_not_survive_g711_counterpart(self) -> None:
        """The same tone through a PCMA call (8 kHz) comes back without its 6 kHz energy.

        A 2 kHz tone through the same path comes back whole, so the path itself is sound.
        """

        def narrowband(samples: np.ndarray) -> np.ndarray:
            narrow = resample(samples, 16000, 8000)
            return resample(alaw_decode(alaw_encode(narrow)), 8000, 16000)[1600:-1600]

        self.assertGreater(np.abs(narrowband(tone(16000, 2000))).max(), 6000)
        back = narrowband(tone(16000, 6000))
        self.assertLess(np.abs(back).max(), 400)
        wide = round_trip(tone(16000, 6000))[1600:-1600]
        self.assertGreater(np.abs(wide).max(), 20 * np.abs(back).max())
