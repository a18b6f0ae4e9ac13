"""Tests for voiptwisted.codecs.registry: codec descriptions, per-call coders, negotiation."""

from __future__ import annotations

import numpy as np
from twisted.trial import unittest

from tests.rtp.test_protocol import SDP_PEER, frames, make
from voiptwisted.codecs import CODECS, Codec, lookup, register_codec
from voiptwisted.codecs.g711 import alaw_decode, alaw_encode, ulaw_decode, ulaw_encode
from voiptwisted.rtp.packet import RTPPacket
from voiptwisted.sdp import SessionDescription
from voiptwisted.sdp.negotiation import answer_for, create_offer


class CountingEncoder:
    """A coder with state between packets: each payload octet is its packet count."""

    def __init__(self) -> None:
        self.packets = 0

    def encode(self, samples: np.ndarray) -> bytes:
        self.packets += 1
        return bytes([self.packets]) * len(samples)


class SilentDecoder:
    def decode(self, payload: bytes) -> np.ndarray:
        return np.zeros(len(payload), np.int16)


COUNTING = Codec("X-COUNT", 8000, 8000, 1, None, CountingEncoder, SilentDecoder)


class G711EntryTests(unittest.SynchronousTestCase):
    def test_descriptions(self) -> None:
        """RFC 3551 §4.5.14 and Table 4: PCMU is PT 0, PCMA PT 8, both 8000 Hz mono."""
        self.assertEqual(
            [(c.name, c.clock_rate, c.sample_rate, c.channels, c.payload_type, c.fmtp)
             for c in lookup(("pcmu", "PCMA"))],
            [("PCMU", 8000, 8000, 1, 0, None), ("PCMA", 8000, 8000, 1, 8, None)],
        )  # fmt: skip

    def test_coders_bit_exact_with_functions(self) -> None:
        """The registry's coders and their tables code every one of the 65,536 samples and
        256 code words exactly as the G.711 functions do; the tables are read-only."""
        samples = np.arange(65536, dtype=np.uint16).view(np.int16)
        codes = bytes(range(256))
        for name, encode, decode in (("PCMA", alaw_encode, alaw_decode),
                                     ("PCMU", ulaw_encode, ulaw_decode)):
            encoder, decoder = CODECS[name].encoder(), CODECS[name].decoder()
            self.assertEqual(encoder.encode(samples), encode(samples), name)
            self.assertEqual(encoder.encode_table.take(samples.view(np.uint16)).tobytes(),
                             encode(samples), name)
            np.testing.assert_array_equal(decoder.decode(codes), decode(codes))
            np.testing.assert_array_equal(decoder.decode_table, decode(codes))
            self.assertFalse(encoder.encode_table.flags.writeable)
            self.assertFalse(decoder.decode_table.flags.writeable)

    def test_equality_is_the_description(self) -> None:
        """Codecs are dict keys; the factories take no part in equality."""
        pcma = CODECS["PCMA"]
        self.assertEqual({pcma: 1}[pcma], 1)
        self.assertEqual(pcma, Codec("PCMA", 8000, 8000, 1, 8, CountingEncoder, SilentDecoder))

    def test_unknown_name(self) -> None:
        with self.assertRaises(ValueError):
            lookup(("PCMA", "OPUS-NOT-REGISTERED"))


class RegistrationTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        register_codec(COUNTING)
        self.addCleanup(CODECS.pop, "X-COUNT")

    def test_registered_codec_is_negotiated(self) -> None:
        """A registered codec (G.722 and Opus later) joins offer/answer by name: a dynamic
        payload type in our offer (RFC 3551 §3), and the answer hands the entry back."""
        offer, _ = create_offer(local_host="127.0.0.1", port=10000,
                                codecs=lookup(("PCMA", "x-count")))
        self.assertIn(b"a=rtpmap:96 X-COUNT/8000", bytes(offer))
        theirs = SessionDescription.parse(
            b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
            b"m=audio 4000 RTP/AVP 98 8\r\na=rtpmap:98 X-COUNT/8000\r\n"
        )
        _, negotiated = answer_for(theirs, local_host="127.0.0.1", port=10000,
                                   codecs=lookup(("X-COUNT", "PCMA")))
        self.assertIs(negotiated.codec, COUNTING)
        self.assertEqual(negotiated.payload_type, 98)

    def test_coders_per_call_and_kept_across_reconfigure(self) -> None:
        """Every call gets its own coder state; a re-INVITE keeping the codec keeps it."""
        calls = [make() for _ in range(2)]
        for proto, *_ in calls:
            proto.configure(remote=SDP_PEER, codec=COUNTING, payload_type=96)
        first, clock, rtp, _, session = calls[0]
        _, clock2, rtp2, _, session2 = calls[1]
        session.send_audio(frames(2))
        clock.advance(0.02)
        clock.advance(0.02)
        session2.send_audio(frames(1))
        clock2.advance(0.02)
        first.configure(remote=SDP_PEER, codec=COUNTING, payload_type=96, direction="sendrecv")
        session.send_audio(frames(1))
        clock.advance(0.02)
        counts = [RTPPacket.parse(data).payload[0] for data, _ in rtp.sent]
        self.assertEqual(counts, [1, 2, 3])
        self.assertEqual([RTPPacket.parse(data).payload[0] for data, _ in rtp2.sent], [1])


class WidebandEntryTests(unittest.SynchronousTestCase):
    def test_descriptions(self) -> None:
        """RFC 3551 §4.5.2: G722/8000, PT 9, 16 kHz audio; RFC 7587 §7: opus/48000/2, a
        dynamic PT, 48 kHz audio, fmtp saying mono both ways and in-band FEC wanted."""
        g722, opus = lookup(("g722", "OPUS"))
        self.assertEqual((g722.name, g722.clock_rate, g722.sample_rate, g722.channels,
                          g722.payload_type), ("G722", 8000, 16000, 1, 9))
        self.assertEqual((g722.frame_samples, g722.timestamp_step), (320, 160))
        self.assertEqual((opus.name, opus.clock_rate, opus.sample_rate, opus.channels,
                          opus.payload_type), ("opus", 48000, 48000, 2, None))
        self.assertEqual((opus.frame_samples, opus.timestamp_step), (960, 960))
        from voiptwisted.codecs.opus import OpusSettings, parse_fmtp

        self.assertEqual(parse_fmtp(opus.fmtp or ""), OpusSettings().fmtp())

    def test_opus_encoder_follows_peer_fmtp(self) -> None:
        """RFC 7587 §6.1: the peer's fmtp shapes our encoder (FEC only if it wants it, our
        band capped by its maxplaybackrate); complexity is the registry's default."""
        from voiptwisted.codecs import registry

        opus = CODECS["OPUS"]
        plain = opus.encoder(None)
        self.assertFalse(plain.settings.inband_fec)
        self.assertEqual(plain.settings.complexity, registry.OPUS_COMPLEXITY)
        fitted = opus.encoder("useinbandfec=1; maxplaybackrate=16000")
        self.assertTrue(fitted.settings.inband_fec)
        self.assertEqual(fitted.settings.max_capture_rate, 16000)

    def test_default_offer_lists_wideband_first_with_events_per_clock(self) -> None:
        """Issue 12 / RFC 4733 §7.1.1: our offer lists Opus, G.722, PCMA, PCMU in that order
        and telephone-event at each of their clock rates (/48000 for Opus, /8000: PT 101)."""
        from voiptwisted.codecs import DEFAULT_CODECS

        offer, _ = create_offer(local_host="127.0.0.1", port=10000,
                                codecs=lookup(DEFAULT_CODECS))
        media = offer.media[0]
        names = [(f.payload_type, f.encoding_name, f.sample_rate) for f in media.fmt]
        self.assertEqual(names, [
            (96, "opus", 48000), (9, "G722", 8000), (8, "PCMA", 8000), (0, "PCMU", 8000),
            (97, "telephone-event", 48000), (101, "telephone-event", 8000),
        ])
        self.assertIn(b"a=rtpmap:96 opus/48000/2", bytes(offer))
        self.assertIn(b"a=fmtp:96 maxplaybackrate=48000;", bytes(offer))

    def test_answer_takes_offerers_first_codec_and_its_event_clock(self) -> None:
        """RFC 3264 §6.1: the offer's first codec we support wins; telephone-event is
        answered at that codec's clock rate (RFC 4733 §2.1)."""
        sdp = (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
               b"m=audio 4000 RTP/AVP 111 9 8 101 110\r\na=rtpmap:111 opus/48000/2\r\n"
               b"a=fmtp:111 useinbandfec=1\r\na=rtpmap:9 G722/8000\r\n"
               b"a=rtpmap:101 telephone-event/48000\r\na=rtpmap:110 telephone-event/8000\r\n")
        offer = SessionDescription.parse(sdp)
        answer, negotiated = answer_for(offer, local_host="127.0.0.1", port=10000,
                                        codecs=lookup(("PCMA", "G722", "opus")))
        self.assertEqual((negotiated.codec.name, negotiated.payload_type), ("opus", 111))
        self.assertEqual(negotiated.telephone_event_pt, 101)
        self.assertEqual(negotiated.remote_fmtp, "useinbandfec=1")
        self.assertIn(b"a=rtpmap:101 telephone-event/48000", bytes(answer))
        _, negotiated = answer_for(offer, local_host="127.0.0.1", port=10000,
                                   codecs=lookup(("PCMA", "G722")))
        self.assertEqual((negotiated.codec.name, negotiated.telephone_event_pt), ("G722", 110))


class MissingLibraryTests(unittest.SynchronousTestCase):
    """A codec whose system library is missing (Opus without libopus0) is left out of the
    defaults, and naming it is an error that says what to install, in every API."""

    def setUp(self) -> None:
        import dataclasses

        opus = CODECS["OPUS"]
        register_codec(dataclasses.replace(opus, missing=lambda: "libopus is not installed"))
        self.addCleanup(register_codec, opus)

    def test_defaults_leave_it_out(self) -> None:
        from voiptwisted.media.call import MediaConfig
        from voiptwisted.service import ServiceConfig

        self.assertEqual(MediaConfig().codecs, ("G722", "PCMA", "PCMU"))
        self.assertEqual(ServiceConfig().codecs, ("G722", "PCMA", "PCMU"))

    def test_naming_it_is_an_error_saying_what_to_install(self) -> None:
        from twisted.python import usage

        from voiptwisted.media.call import MediaConfig
        from voiptwisted.tap import Options

        with self.assertRaisesRegex(ValueError, "libopus is not installed"):
            MediaConfig(codecs=("opus", "PCMA"))
        options = Options()
        with self.assertRaisesRegex(usage.UsageError, "libopus is not installed"):
            options.parseOptions(["--codecs", "opus,pcma"])

    def test_codecs_without_a_library_check_are_kept(self) -> None:
        from voiptwisted.codecs import usable

        self.assertEqual(usable(("G722", "pcma"), explicit=True), ("G722", "pcma"))
