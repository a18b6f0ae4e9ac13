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
