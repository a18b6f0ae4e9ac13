"""Tests for voiptwisted.rtp.latch: RTP source validation (RFC 3550 §8.2 / A.1, RFC 4961)."""

from __future__ import annotations

from twisted.trial import unittest

from voiptwisted.rtp.latch import MAX_CANDIDATES, PROBATION, RELATCH_AFTER, SourceLatch

SDP = ("192.0.2.1", 4000)
NAT = ("198.51.100.7", 33333)
MALLORY = ("203.0.113.66", 6000)


def run(latch: SourceLatch, address: tuple[str, int], first: int, count: int, now: float,
        ssrc: int = 1) -> list[bool]:
    """*count* in-sequence packets from *address*; what accept() said for each."""
    return [latch.accept(address, ssrc, (first + i) & 0xFFFF, now) for i in range(count)]


class SourceLatchTests(unittest.SynchronousTestCase):
    def latch(self) -> SourceLatch:
        latch = SourceLatch()
        latch.expect(SDP)
        return latch

    def test_sdp_address_latches_on_first_packet(self) -> None:
        latch = self.latch()
        self.assertTrue(latch.accept(SDP, 1, 10, 0.0))
        self.assertEqual(latch.source, SDP)

    def test_nat_source_needs_in_sequence_run(self) -> None:
        """RFC 3550 Appendix A.1: a new source is valid after MIN_SEQUENTIAL packets in
        sequence; a gap or another SSRC starts the run again."""
        latch = self.latch()
        self.assertEqual(run(latch, NAT, 1, PROBATION, 0.0), [False] * (PROBATION - 1) + [True])
        latch = self.latch()
        self.assertFalse(any(latch.accept(NAT, 1, seq, 0.0) for seq in (1, 3, 5, 7, 9)))
        self.assertFalse(any(latch.accept(NAT, ssrc, 1 + ssrc, 0.0) for ssrc in range(9)))
        self.assertIsNone(latch.source)

    def test_sequence_wraps(self) -> None:
        latch = self.latch()
        self.assertTrue(run(latch, NAT, 0xFFFF, PROBATION, 0.0)[-1])

    def test_competing_sources_latch_neither(self) -> None:
        """Two unvalidated sources at once: no way to tell the NATed peer from a sprayer,
        so neither gets the stream (we keep sending to the SDP address)."""
        latch = self.latch()
        for i in range(20):
            self.assertFalse(latch.accept(NAT, 1, i, i * 0.02))
            self.assertFalse(latch.accept(MALLORY, 2, i, i * 0.02))
        self.assertIsNone(latch.source)
        # Mallory gives up: after COMPETING_WITHIN the NATed peer latches.
        self.assertTrue(run(latch, NAT, 20, 1, 2.0)[-1])

    def test_spoofed_source_refused_while_peer_talks(self) -> None:
        latch = self.latch()
        latch.accept(SDP, 1, 1, 0.0)
        for i in range(500):
            latch.accept(SDP, 1, 2 + i, i * 0.02)
            self.assertFalse(latch.accept(MALLORY, 9, i, i * 0.02))
        self.assertEqual(latch.source, SDP)

    def test_relatch_after_silence_and_run(self) -> None:
        """Another source takes over only after RELATCH_AFTER of silence and a valid run."""
        latch = self.latch()
        latch.accept(SDP, 1, 1, 0.0)
        self.assertFalse(any(run(latch, NAT, 100, 10, RELATCH_AFTER - 0.1)))
        self.assertEqual(latch.source, SDP)
        self.assertTrue(run(latch, NAT, 110, 1, RELATCH_AFTER)[-1])
        self.assertEqual(latch.source, NAT)

    def test_sdp_address_displaces_a_probation_source(self) -> None:
        """A sprayer that got in before the real peer loses the stream to the SDP address."""
        latch = self.latch()
        self.assertTrue(run(latch, MALLORY, 1, 10, 0.0)[-1])
        self.assertEqual(latch.source, MALLORY)
        self.assertTrue(run(latch, SDP, 500, PROBATION, 0.1)[-1])
        self.assertEqual(latch.source, SDP)
        self.assertFalse(any(run(latch, MALLORY, 11, 100, 0.2)))

    def test_refresh_keeps_latch_new_address_restarts(self) -> None:
        latch = self.latch()
        run(latch, NAT, 1, PROBATION, 0.0)
        latch.expect(NAT)
        self.assertEqual(latch.source, NAT)
        latch.expect(("192.0.2.99", 4000))
        self.assertIsNone(latch.source)

    def test_candidates_bounded(self) -> None:
        """A spray from many addresses keeps at most MAX_CANDIDATES entries."""
        latch = self.latch()
        for i in range(10 * MAX_CANDIDATES):
            latch.accept(("203.0.113.1", 1024 + i), i, i, 0.0)
        self.assertLessEqual(len(latch._candidates), MAX_CANDIDATES)

    def test_bad_settings(self) -> None:
        with self.assertRaises(ValueError):
            SourceLatch(probation=0)
        with self.assertRaises(ValueError):
            SourceLatch(relatch_after=-1)
