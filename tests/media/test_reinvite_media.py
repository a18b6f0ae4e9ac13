"""CallMedia across a re-INVITE (RFC 3264 §8, RFC 4568 §7.1.4): where RTP goes, what it is.

In memory: ``UDPClock`` hands out fake UDP ports and drives the pacer, so every packet
sent is recorded with its destination and nothing depends on wall-clock time.
"""

from __future__ import annotations

import numpy as np
from twisted.trial.unittest import SynchronousTestCase

from tests.media.test_call import FakeDialog, UDPClock
from tests.sdp.test_types import SDESTests, key_leaked, malformed_crypto_lines
from tests.sip.test_dialog import OFFER, connect, invite_bytes, make_protocol, written
from tests.sip.test_reinvite import Callee, reinvite
from voiptwisted.media.call import CallMedia, MediaConfig, NegotiationFailed
from voiptwisted.media.pacer import Pacer
from voiptwisted.media.session import Session
from voiptwisted.rtp.latch import PROBATION
from voiptwisted.rtp.packet import RTPPacket
from voiptwisted.sdp import SessionDescription

SUITE = "AES_CM_128_HMAC_SHA1_80"


class Talker(Session):
    """Sends silence frames for as long as the test runs; records what it hears."""

    def __init__(self, dialog: object, **kwargs: object) -> None:
        super().__init__(dialog, **kwargs)
        self.heard = 0

    def next_frame(self) -> np.ndarray:
        return np.zeros(160, np.int16)

    def audio_received(self, samples: np.ndarray) -> None:
        self.heard += 1


def origin(sdp: bytes) -> tuple[str, int]:
    described = SessionDescription.parse(sdp)
    return described.origin.sess_id, int(described.origin.sess_version)


def crypto_key(sdp: bytes) -> bytes:
    [line] = [line for line in sdp.split(b"\r\n") if line.startswith(b"a=crypto:")]
    return line.split(b"inline:")[1]


class ReinviteMediaTests(SynchronousTestCase):
    """Alice's offer, Bob's answering CallMedia; then Alice re-offers."""

    srtp = "off"

    def setUp(self) -> None:
        self.clock = UDPClock()
        self.config = MediaConfig(
            reactor=self.clock, pacer=Pacer(self.clock), srtp=self.srtp, codecs=("PCMA", "PCMU")
        )
        self.alice = CallMedia.create_offer(self.config, "127.0.0.1")
        self.bob = CallMedia.answer_offer(self.config, self.alice.local_sdp, "127.0.0.1")
        self.alice.accept_answer(self.bob.local_sdp)
        self.addCleanup(self.alice.stop)
        self.addCleanup(self.bob.stop)
        self.session = Talker(FakeDialog())
        self.bob.start(self.session)

    def sent(self) -> list[tuple[RTPPacket, tuple[str, int]]]:
        """RTP packets Bob sent so far (RTCP skipped), cleared."""
        port = self.bob.rtp.transport
        packets = [(RTPPacket.parse(data), addr) for data, addr in port.sent if data[1] < 192]
        port.sent.clear()
        return packets

    def from_alice(self, sequence: int) -> bytes:
        """One audio packet as Alice's side would send it."""
        return RTPPacket(8, sequence, 160 * sequence, 1234, b"\xd5" * 160).serialize()

    def ticks(self, count: int) -> None:
        for _ in range(count):
            self.clock.advance(0.02)

    def test_new_port_moves_rtp(self) -> None:
        """RFC 3264 §8.3.1: a re-offer with a new c= address and m= port: RTP goes there
        from the next packet, with the same SSRC and continuous sequence and timestamp."""
        self.ticks(3)
        before = self.sent()
        self.assertEqual({addr for _, addr in before}, {("127.0.0.1", self.alice.local_port)})
        moved = self.alice.local_sdp.replace(
            f"m=audio {self.alice.local_port} ".encode(), b"m=audio 40002 "
        ).replace(b"c=IN IP4 127.0.0.1", b"c=IN IP4 127.0.0.2")
        answer = self.bob.reanswer(moved)
        self.assertEqual(origin(answer)[1], 0)  # our description did not change
        self.ticks(3)
        after = self.sent()
        self.assertEqual({addr for _, addr in after}, {("127.0.0.2", 40002)})
        packets = [p for p, _ in before + after]
        self.assertEqual({p.ssrc for p in packets}, {self.bob.rtp.ssrc})
        self.assertEqual(
            [(p.sequence - packets[0].sequence) & 0xFFFF for p in packets], list(range(6))
        )
        self.assertEqual(
            [(p.timestamp - packets[0].timestamp) & 0xFFFFFFFF for p in packets],
            [160 * i for i in range(6)],
        )

    def test_hold_and_resume(self) -> None:
        """RFC 3264 §8.4: a sendonly offer -> our answer recvonly, version + 1: we stop sending
        but still hear the held side; sendrecv resumes sending, version + 1 again."""
        session_id, version = origin(self.bob.local_sdp)
        hold = self.bob.reanswer(self.alice.local_sdp.replace(b"a=sendrecv", b"a=sendonly"))
        self.assertIn(b"a=recvonly", hold)
        self.assertEqual(origin(hold), (session_id, version + 1))
        self.assertEqual(self.bob.negotiated.direction, "recvonly")
        self.ticks(5)
        self.assertEqual(self.sent(), [])
        self.bob.rtp.datagramReceived(self.from_alice(1), ("127.0.0.1", self.alice.local_port))
        self.assertEqual(self.session.heard, 1)
        resume = self.bob.reanswer(self.alice.local_sdp)
        self.assertIn(b"a=sendrecv", resume)
        self.assertEqual(origin(resume), (session_id, version + 2))
        self.ticks(2)
        self.assertEqual(len(self.sent()), 2)

    def test_inactive(self) -> None:
        """RFC 3264 §8.4: an inactive offer is answered inactive; nothing is sent."""
        answer = self.bob.reanswer(self.alice.local_sdp.replace(b"a=sendrecv", b"a=inactive"))
        self.assertIn(b"a=inactive", answer)
        self.ticks(3)
        self.assertEqual(self.sent(), [])

    def test_session_refresh_changes_nothing(self) -> None:
        """RFC 3264 §8 / RFC 4028: the same offer again: the same answer, o= version
        unchanged, and RTP keeps the address it latched to (RFC 4961)."""
        first = self.bob.local_sdp
        for sequence in range(1, PROBATION + 1):
            self.bob.rtp.datagramReceived(self.from_alice(sequence), ("127.0.0.1", 50000))
        self.assertEqual(self.bob.rtp.remote, ("127.0.0.1", 50000))
        self.assertEqual(self.bob.reanswer(self.alice.local_sdp), first)
        self.ticks(1)
        [(_, addr)] = self.sent()
        self.assertEqual(addr, ("127.0.0.1", 50000))

    def test_unacceptable_offer_changes_nothing(self) -> None:
        """RFC 3261 §14.2: NegotiationFailed (488) and the media is as before."""
        before = (self.bob.local_sdp, self.bob.negotiated)
        with self.assertRaises(NegotiationFailed) as raised:
            self.bob.reanswer(self.alice.local_sdp.replace(b"RTP/AVP 8 0 101", b"RTP/AVP 18"))
        self.assertEqual(raised.exception.status_code, 488)
        self.assertEqual((self.bob.local_sdp, self.bob.negotiated), before)
        self.ticks(1)
        self.assertEqual(len(self.sent()), 1)

    def test_reoffer_and_answer(self) -> None:
        """RFC 3264 §5 / §8: for a re-INVITE without SDP we offer our current description,
        sendrecv again (after a hold), and apply the answer."""
        self.bob.reanswer(self.alice.local_sdp.replace(b"a=sendrecv", b"a=sendonly"))
        session_id, version = origin(self.bob.local_sdp)
        offer = self.bob.reoffer()
        self.assertIn(b"a=sendrecv", offer)
        self.assertEqual(origin(offer), (session_id, version + 1))
        self.assertEqual(self.bob.reoffer(), offer)  # unchanged: same version
        self.alice.reanswer(offer)
        self.bob.accept_answer(self.alice.local_sdp)
        self.assertEqual(self.bob.negotiated.direction, "sendrecv")
        self.ticks(1)
        self.assertEqual(len(self.sent()), 1)


class SRTPReinviteMediaTests(ReinviteMediaTests):
    """The same with SDES-SRTP, plus what happens to the keys (RFC 4568 §7.1.4)."""

    srtp = "required"

    def sent(self) -> list[tuple[RTPPacket, tuple[str, int]]]:
        """SRTP packets Bob sent, their headers read in clear (RFC 3711 §3.1)."""
        port = self.bob.rtp.transport
        packets = [
            (RTPPacket.parse(data[:-10]), addr) for data, addr in port.sent if data[1] < 192
        ]
        port.sent.clear()
        return packets

    def from_alice(self, sequence: int) -> bytes:
        """One audio packet protected with Alice's key."""
        return bytes(self.alice.rtp.srtp.protect(super().from_alice(sequence)))

    def test_unacceptable_offer_changes_nothing(self) -> None:
        """RFC 3261 §14.2 with policy required: an RTP/AVP re-offer gets 488, SRTP goes on."""
        context = self.bob.rtp.srtp
        with self.assertRaises(NegotiationFailed):
            self.bob.reanswer(self.alice.local_sdp.replace(b"RTP/SAVP", b"RTP/AVP"))
        self.assertIs(self.bob.rtp.srtp, context)

    def test_same_keys_keep_context(self) -> None:
        """RFC 4568 §7.1.4: the peer keeps suite and key: we keep ours and the SRTP context."""
        context, key = self.bob.rtp.srtp, crypto_key(self.bob.local_sdp)
        hold = self.bob.reanswer(self.alice.local_sdp.replace(b"a=sendrecv", b"a=sendonly"))
        self.assertEqual(crypto_key(hold), key)
        self.assertIs(self.bob.rtp.srtp, context)

    def test_peer_rekey_gets_fresh_key(self) -> None:
        """RFC 4568 §7.1.4: the peer offers a new key: a new context, with a fresh key of
        ours too (an old key must not start a new context)."""
        context, key = self.bob.rtp.srtp, crypto_key(self.bob.local_sdp)
        rekeyed = CallMedia.create_offer(self.config, "127.0.0.1")
        self.addCleanup(rekeyed.stop)
        answer = self.bob.reanswer(rekeyed.local_sdp)
        self.assertNotEqual(crypto_key(answer), key)
        self.assertIsNot(self.bob.rtp.srtp, context)
        rekeyed.accept_answer(answer)
        self.ticks(1)
        [(packet, _)] = self.sent()
        self.assertEqual(packet.ssrc, self.bob.rtp.ssrc)

    def test_reoffer_and_answer(self) -> None:
        """RFC 4568 §7.1.4: our offer for an empty re-INVITE carries a fresh key of ours."""
        key = crypto_key(self.bob.local_sdp)
        offer = self.bob.reoffer()
        self.assertNotEqual(crypto_key(offer), key)
        self.alice.reanswer(offer)
        self.bob.accept_answer(self.alice.local_sdp)
        self.assertEqual(self.bob.negotiated.srtp.local.master, self.bob._offered_crypto[1].master)
        self.ticks(1)
        self.assertEqual(len(self.sent()), 1)

    def test_reoffer_answered_with_same_peer_key_keeps_its_context(self) -> None:
        """RFC 4568 §7.1.4, RFC 3711 §3.3.1: the peer answers our re-offer keeping its key:
        our context for its packets carries on (rollover counter and replay window), only
        our re-keyed sending side starts afresh."""
        before = self.bob.rtp.srtp
        peer_key = self.bob.negotiated.srtp.remote.to_sdp().split("inline:")[1].encode()
        offer = self.bob.reoffer()
        self.alice.reanswer(offer)
        answer = self.alice.local_sdp.replace(crypto_key(self.alice.local_sdp), peer_key)
        self.bob.accept_answer(answer)
        self.assertIsNot(self.bob.rtp.srtp._tx, before._tx)
        self.assertIs(self.bob.rtp.srtp._rx, before._rx)


class MalformedCryptoWarningTests(SynchronousTestCase):
    """A real CallMedia behind the SIP protocol: what a refused re-INVITE's Warning says."""

    def test_warning_quotes_no_key(self) -> None:
        """Issue 14 finding 12 / RFC 3261 §14.2: a re-INVITE whose only a=crypto lines are
        malformed gets 488 with a Warning (§20.43) that quotes no key characters."""
        key = SDESTests.key
        clock = UDPClock()
        config = MediaConfig(reactor=clock, pacer=Pacer(clock), srtp="required")
        bob = make_protocol("sip:bob@example.com", clock, None, media_config=config,
                            dialog_class=Callee)
        transport = connect(bob)
        offer = OFFER + f"m=audio 10000 RTP/SAVP 8\r\na=crypto:1 {SUITE} inline:{key}\r\n".encode()
        Callee.instances = []
        bob.dataReceived(invite_bytes(body=offer))
        tag = written(transport)[-1].remote_tag
        bob.dataReceived(invite_bytes(method="ACK", branch="z9hG4bKa", body=b"", to_tag=tag))
        [callee] = Callee.instances
        self.addCleanup(callee.media.stop)
        for cseq, value in enumerate(malformed_crypto_lines(key), 2):
            body = OFFER + f"m=audio 10000 RTP/SAVP 8\r\na=crypto:{value}\r\n".encode()
            bob.dataReceived(reinvite(tag, cseq=cseq, body=body))
            refused = written(transport)[-1]
            self.assertEqual(refused.status_code, 488, value)
            self.assertIsNone(key_leaked(key, refused.headers["Warning"]), value)
            bob.dataReceived(reinvite(tag, cseq=cseq, method="ACK", body=b""))
        self.assertEqual(bob.dialog_count, 1)
