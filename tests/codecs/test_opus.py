"""Tests for voiptwisted.codecs.opus: Opus over RTP (RFC 7587) with FEC and concealment."""

from __future__ import annotations

import numpy as np
import opuslib_next
from twisted.trial.unittest import SynchronousTestCase

from tests.codecs.signals import aligned_correlation, band_fraction, frames, speech, tone
from voiptwisted.codecs.opus import (
    OpusDecodeError,
    OpusDecoder,
    OpusEncoder,
    OpusSettings,
    parse_fmtp,
)

SPEECH = speech(48000)
OPUS_DELAY = 600  # samples at 48 kHz searched for the codec's look-ahead delay


def round_trip(samples: np.ndarray, settings: OpusSettings | None = None) -> np.ndarray:
    encoder, decoder = OpusEncoder(settings), OpusDecoder()
    return np.concatenate([decoder.decode(encoder.encode(f)) for f in frames(samples, 960)])


def relative_error(frame: np.ndarray, reference: np.ndarray) -> float:
    """Energy of the difference over the reference's energy: silence scores 1.0."""
    ref = reference.astype(np.float64)
    return float(((frame.astype(np.float64) - ref) ** 2).sum() / (ref**2).sum())


class OpusPayloadFormatTests(SynchronousTestCase):
    """RFC 7587 §4.1, §7: 48 kHz RTP clock and ``opus/48000/2`` whatever is sent."""

    def test_rfc7587_clock_and_rtpmap(self) -> None:
        for cls in (OpusEncoder, OpusDecoder):
            self.assertEqual(cls.encoding_name, "opus")
            self.assertEqual(cls.rtpmap_channels, 2)
            self.assertEqual(cls.clock_rate, 48000)
            self.assertEqual(cls.audio_rate, 48000)
            self.assertEqual(cls.frame_samples, 960)
            self.assertEqual(cls.timestamp_step, 960)

    def test_encoder_takes_one_mono_frame_only(self) -> None:
        encoder = OpusEncoder()
        for bad in (SPEECH[:959], SPEECH[:1920], SPEECH[:1920].reshape(2, 960)):
            self.assertRaises(ValueError, encoder.encode, bad)

    def test_malformed_and_empty_payloads_raise_decode_error(self) -> None:
        decoder = OpusDecoder()
        self.assertRaises(OpusDecodeError, decoder.decode, b"\xff\xff\xff")
        self.assertRaises(OpusDecodeError, decoder.decode, b"")
        self.assertRaises(OpusDecodeError, decoder.decode_fec, b"")
        self.assertEqual(len(decoder.decode(OpusEncoder().encode(SPEECH[:960]))), 960)


class OpusAudioTests(SynchronousTestCase):
    def test_speech_round_trip_correlates_with_input(self) -> None:
        decoded = round_trip(SPEECH)
        self.assertEqual(len(decoded), len(SPEECH))
        self.assertGreaterEqual(aligned_correlation(SPEECH, decoded, OPUS_DELAY), 0.8)

    def test_6khz_tone_survives(self) -> None:
        decoded = round_trip(tone(48000, 6000))[4800:]
        self.assertGreater(band_fraction(decoded, 48000, 5800, 6200), 0.9)
        self.assertGreater(np.abs(decoded).max(), 4000)

    def test_rfc7587_6_1_peer_maxplaybackrate_8000_narrows_the_encoded_band(self) -> None:
        settings = OpusSettings().for_peer(parse_fmtp("maxplaybackrate=8000"))
        decoded = round_trip(tone(48000, 6000), settings)[4800:]
        self.assertLess(np.abs(decoded).max(), 400)

    def test_rfc7587_3_3_stereo_packet_decodes_to_mono(self) -> None:
        """A peer's stereo packets (our SDP allows it) come out as one mono channel."""
        stereo = opuslib_next.Encoder(48000, 2, "voip")
        stereo.bitrate = 64000
        left, right = SPEECH, (SPEECH // 2).astype(np.int16)
        interleaved = np.stack([left, right], axis=1).astype(np.int16)
        decoder = OpusDecoder()
        out = []
        for i in range(0, len(SPEECH) - 959, 960):
            packet = stereo.encode(interleaved[i : i + 960].tobytes(), 960)
            self.assertEqual(packet[0] & 0x04, 0x04)  # TOC stereo flag, RFC 6716 §3.1
            out.append(decoder.decode(packet))
        self.assertEqual({len(f) for f in out}, {960})
        self.assertGreaterEqual(aligned_correlation(SPEECH, np.concatenate(out), OPUS_DELAY), 0.8)


class OpusLossTests(SynchronousTestCase):
    """RFC 7587 §3.2 / RFC 6716 §4.4: in-band FEC and the decoder's own concealment."""

    def packets(self, settings: OpusSettings) -> tuple[list[bytes], list[np.ndarray]]:
        encoder, reference = OpusEncoder(settings), OpusDecoder()
        packets = [encoder.encode(f) for f in frames(SPEECH, 960)]
        return packets, [reference.decode(p) for p in packets]

    def test_fec_of_next_packet_rebuilds_the_lost_frame(self) -> None:
        packets, decoded = self.packets(OpusSettings(inband_fec=True, packet_loss_percent=20))
        for lost in (5, 20, 40):
            receiver, concealer = OpusDecoder(), OpusDecoder()
            for p in packets[:lost]:
                receiver.decode(p)
                concealer.decode(p)
            rebuilt = receiver.decode_fec(packets[lost + 1])
            self.assertEqual(len(rebuilt), 960)
            error = relative_error(rebuilt, decoded[lost])
            self.assertLess(error, 0.25)  # silence would be 1.0
            self.assertLess(error, relative_error(concealer.conceal(), decoded[lost]) / 4)
            self.assertEqual(len(receiver.decode(packets[lost + 1])), 960)

    def test_without_fec_decode_fec_falls_back_to_concealment(self) -> None:
        packets, _ = self.packets(OpusSettings(inband_fec=False))
        receiver, concealer = OpusDecoder(), OpusDecoder()
        for p in packets[:20]:
            receiver.decode(p)
            concealer.decode(p)
        np.testing.assert_array_equal(receiver.decode_fec(packets[21]), concealer.conceal())

    def test_conceal_continues_then_fades(self) -> None:
        packets, decoded = self.packets(OpusSettings())
        decoder = OpusDecoder()
        for p in packets[:20]:
            decoder.decode(p)
        concealed = [decoder.conceal().astype(np.float64) for _ in range(8)]
        self.assertEqual({len(f) for f in concealed}, {960})
        energies = [float((f**2).sum()) for f in concealed]
        self.assertGreater(energies[0], 0.01 * float((decoded[19].astype(float) ** 2).sum()))
        self.assertLess(energies[-1], energies[0] / 10)
        self.assertEqual(len(decoder.decode(packets[28])), 960)


class OpusFmtpTests(SynchronousTestCase):
    """RFC 7587 §6.1 fmtp parameters: what we announce, and what a peer's change."""

    def test_announced_fmtp(self) -> None:
        self.assertEqual(
            OpusSettings(max_playback_rate=16000).fmtp(),
            {
                "maxplaybackrate": "16000",
                "sprop-maxcapturerate": "48000",
                "stereo": "0",
                "sprop-stereo": "0",
                "useinbandfec": "1",
            },
        )

    def test_parse_fmtp(self) -> None:
        self.assertEqual(
            parse_fmtp(" MaxPlaybackRate=16000;useinbandfec = 1; stereo=1;junk;;x="),
            {"maxplaybackrate": "16000", "useinbandfec": "1", "stereo": "1", "x": ""},
        )
        self.assertEqual(parse_fmtp("useinbandfec=1;" + "a" * 2000), {})

    def test_rfc7587_6_1_peer_fmtp_sets_encoder(self) -> None:
        ours = OpusSettings(bitrate=32000, inband_fec=True)
        peer = ours.for_peer(
            parse_fmtp("maxplaybackrate=16000; maxaveragebitrate=20000; useinbandfec=1")
        )
        self.assertEqual(peer.max_capture_rate, 16000)
        self.assertEqual(peer.max_playback_rate, 48000)  # what we can play is ours to say
        self.assertEqual(peer.bitrate, 20000)
        self.assertTrue(peer.inband_fec)

    def test_rfc7587_6_1_useinbandfec_defaults_to_0(self) -> None:
        self.assertFalse(OpusSettings(inband_fec=True).for_peer(parse_fmtp("stereo=1")).inband_fec)
        self.assertFalse(OpusSettings(inband_fec=False).for_peer({"useinbandfec": "1"}).inband_fec)

    def test_out_of_range_peer_values_are_ignored(self) -> None:
        ours = OpusSettings()
        for text in (
            "maxplaybackrate=abc; maxaveragebitrate=-5",
            "maxplaybackrate=99999999999; maxaveragebitrate=100",
            "maxplaybackrate=4000; maxaveragebitrate=1e6",
        ):
            peer = ours.for_peer(parse_fmtp(text))
            self.assertEqual((peer.max_capture_rate, peer.bitrate), (48000, ours.bitrate))

    def test_settings_are_validated(self) -> None:
        for bad in (
            {"bitrate": 100},
            {"complexity": 11},
            {"packet_loss_percent": 101},
            {"max_playback_rate": 96000},
        ):
            self.assertRaises(ValueError, OpusSettings, **bad)
