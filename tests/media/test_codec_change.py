"""A re-INVITE that changes the codec mid-call (RFC 3264 §8.3.2): the echo carries on in the
new codec at its rate.  In memory (``UDPClock``), driven by hand."""

from __future__ import annotations

import itertools

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from tests.codecs.signals import aligned_correlation, frames, speech
from tests.media.test_call import FakeDialog, UDPClock
from voiptwisted.codecs import lookup
from voiptwisted.codecs.g711 import alaw_encode
from voiptwisted.codecs.g722 import G722Decoder, G722Encoder
from voiptwisted.media.call import CallMedia, MediaConfig
from voiptwisted.media.pacer import Pacer
from voiptwisted.media.session import EchoSession
from voiptwisted.rtp.packet import RTPPacket
from voiptwisted.sdp.negotiation import create_offer


class CodecChangeTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = UDPClock()
        pacer = Pacer(self.clock)
        narrow = MediaConfig(reactor=self.clock, pacer=pacer, srtp="off", codecs=("PCMA",))
        ours = MediaConfig(reactor=self.clock, pacer=pacer, srtp="off")
        self.alice = CallMedia.create_offer(narrow, "127.0.0.1")
        self.bob = CallMedia.answer_offer(ours, self.alice.local_sdp, "127.0.0.1")
        self.addCleanup(self.alice.stop)
        self.addCleanup(self.bob.stop)
        self.session = EchoSession(FakeDialog())
        self.bob.start(self.session)
        self.source = ("127.0.0.1", self.alice.local_port)

    def echoed(self) -> list[RTPPacket]:
        port = self.bob.rtp.transport
        packets = [RTPPacket.parse(d) for d, _ in port.sent if not 200 <= d[1] <= 204]
        port.sent.clear()
        return packets

    def test_pcma_to_g722_keeps_the_echo(self) -> None:
        """PCMA first (8 kHz); a re-offer of G.722 only is answered G.722 and the echo goes
        on in G.722: 16 kHz frames for the session, 160 octets and +160 timestamps on the
        wire, the audio still the caller's."""
        self.assertEqual(self.bob.negotiated.codec.name, "PCMA")
        self.assertEqual(self.session.sample_rate, 8000)
        for seq in range(1, 4):
            payload = alaw_encode(np.full(160, 3000, np.int16))
            packet = RTPPacket(8, seq, seq * 160, 77, payload).serialize()
            self.bob.rtp.datagramReceived(packet, self.source)
            self.clock.advance(0.02)
        self.assertEqual({p.payload_type for p in self.echoed()}, {8})
        offer, _ = create_offer(local_host="127.0.0.1", port=self.alice.local_port,
                                codecs=lookup(("G722",)))
        answer = self.bob.reanswer(bytes(offer))
        self.assertIn(b"G722/8000", answer)
        self.assertEqual(self.session.sample_rate, 16000)
        audio = speech(16000, seconds=0.6)
        encoder = G722Encoder()
        for seq, frame in enumerate(frames(audio, 320), 4):
            packet = RTPPacket(9, seq, seq * 160, 77, encoder.encode(frame)).serialize()
            self.bob.rtp.datagramReceived(packet, self.source)
            self.clock.advance(0.02)
        self.clock.advance(0.1)
        packets = [p for p in self.echoed() if p.payload_type == 9]
        self.assertGreaterEqual(len(packets), 28)
        self.assertEqual({len(p.payload) for p in packets}, {160})
        steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in itertools.pairwise(packets)}
        self.assertEqual(steps, {160})
        decoder = G722Decoder()
        back = np.concatenate([decoder.decode(p.payload) for p in packets])
        self.assertGreater(aligned_correlation(audio, back, 3 * 320), 0.8)
