"""Tests for voiptwisted.media.jitter.JitterBuffer."""

from __future__ import annotations

import random

from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.media.jitter import JitterBuffer
from voiptwisted.rtp.packet import RTPPacket


def pkt(seq: int, ssrc: int = 1, base_ts: int = 0) -> RTPPacket:
    timestamp = (base_ts + seq * 160) & 0xFFFFFFFF
    return RTPPacket(sequence=seq & 0xFFFF, timestamp=timestamp, ssrc=ssrc)


def feed(buffer: JitterBuffer, seqs: list[int], **kw: int) -> list[int]:
    out: list[int] = []
    for s in seqs:
        out.extend(p.sequence for p in buffer.push(pkt(s, **kw)))
    return out


class JitterBufferTests(SynchronousTestCase):
    def test_in_order_passes_through(self) -> None:
        buffer = JitterBuffer()
        self.assertEqual(feed(buffer, list(range(10))), list(range(10)))
        self.assertEqual(len(buffer), 0)

    def test_reorders_within_window(self) -> None:
        """A packet up to 60 ms (3 packets) late is put back in order."""
        buffer = JitterBuffer()
        self.assertEqual(feed(buffer, [0, 2, 3, 4, 1, 5]), [0, 1, 2, 3, 4, 5])
        self.assertEqual(buffer.lost, 0)

    def test_gives_up_after_window(self) -> None:
        """A packet missing for more than 60 ms of media is counted lost and skipped."""
        buffer = JitterBuffer()
        self.assertEqual(feed(buffer, [0, 2, 3, 4]), [0])
        self.assertEqual(feed(buffer, [5]), [2, 3, 4, 5])
        self.assertEqual(buffer.lost, 1)
        # The lost packet arriving now is late: dropped.
        self.assertEqual(feed(buffer, [1, 6]), [6])
        self.assertEqual(buffer.late, 1)

    def test_window_is_configurable(self) -> None:
        buffer = JitterBuffer(window=0.02)
        self.assertEqual(feed(buffer, [0, 2, 3]), [0, 2, 3])
        self.assertEqual(buffer.lost, 1)

    def test_drops_duplicates(self) -> None:
        """RFC 3550 §A.1: duplicates (buffered or already played) are not played twice."""
        buffer = JitterBuffer()
        self.assertEqual(feed(buffer, [0, 2, 2, 1, 1, 0, 3]), [0, 1, 2, 3])
        self.assertEqual(buffer.duplicates, 1)
        self.assertEqual(buffer.late, 2)

    def test_sequence_wraparound(self) -> None:
        """RFC 3550 §5.1: the 16-bit sequence number wraps; order is kept across the wrap."""
        buffer = JitterBuffer()
        seqs = [65533, 65534, 0, 65535, 1, 2]
        self.assertEqual(feed(buffer, seqs), [65533, 65534, 65535, 0, 1, 2])

    def test_timestamp_wraparound(self) -> None:
        buffer = JitterBuffer()
        base = 2**32 - 320
        self.assertEqual(feed(buffer, [0, 2, 3, 4, 5], base_ts=base), [0, 2, 3, 4, 5])
        self.assertEqual(buffer.lost, 1)

    def test_new_ssrc_restarts(self) -> None:
        buffer = JitterBuffer()
        feed(buffer, [10, 12])
        out = [(p.ssrc, p.sequence) for p in buffer.push(pkt(500, ssrc=2))]
        self.assertEqual(out, [(1, 12), (2, 500)])

    def test_large_jump_confirmed_by_next_packet(self) -> None:
        """RFC 3550 §A.1: a jump beyond MAX_DROPOUT is accepted when the next packet follows."""
        buffer = JitterBuffer()
        feed(buffer, [1, 2])
        self.assertEqual(feed(buffer, [40000]), [])
        self.assertEqual(feed(buffer, [40001, 40002]), [40001, 40002])
        self.assertEqual(feed(buffer, [3]), [])  # the old stream is now late

    def test_memory_bounded(self) -> None:
        """Packets whose timestamps never advance still cannot grow the buffer without bound."""
        buffer = JitterBuffer(max_packets=8)
        buffer.push(RTPPacket(sequence=0, timestamp=0, ssrc=1))
        for seq in range(2, 2000):
            buffer.push(RTPPacket(sequence=seq, timestamp=0, ssrc=1))
            self.assertLessEqual(len(buffer), 8)

    def test_flush_releases_in_order(self) -> None:
        buffer = JitterBuffer()
        feed(buffer, [0, 3, 2])
        self.assertEqual([p.sequence for p in buffer.flush()], [2, 3])
        self.assertEqual(len(buffer), 0)
        self.assertEqual(buffer.lost, 1)

    def test_rejects_bad_config(self) -> None:
        with self.assertRaises(ValueError):
            JitterBuffer(max_packets=0)


def _stream(rng: random.Random, count: int) -> list[RTPPacket]:
    """Mostly in-order RTP with reordering, duplicates, losses, late packets,
    sequence wrap, large jumps (confirmed or stray) and SSRC changes."""
    packets: list[RTPPacket] = []
    seq = rng.randrange(1 << 16)
    ssrc = 1
    while len(packets) < count:
        roll = rng.random()
        if roll < 0.70:
            batch = [seq]
        elif roll < 0.80:
            batch = [seq + 1, seq] if rng.random() < 0.5 else [seq + 2, seq, seq + 1]
        elif roll < 0.86:
            batch = [seq, seq]
        elif roll < 0.92:
            seq += rng.randint(1, 6)
            batch = [seq]
        elif roll < 0.96:
            batch = [seq, seq - rng.randint(1, 150)]
        elif roll < 0.97:
            seq += rng.randint(3000, 40000)
            batch = [seq, seq + 1] if rng.random() < 0.5 else [seq]
        elif roll < 0.98:
            # A stray far packet, an in-order one, then the stray's successor: not a restart.
            stray = seq + rng.randint(3000, 40000)
            packets.extend(pkt(s, ssrc=ssrc) for s in (stray, seq, stray + 1))
            seq += 1
            continue
        else:
            ssrc += 1
            batch = [seq]
        packets.extend(pkt(s, ssrc=ssrc) for s in batch)
        seq = max(batch) + 1
    return packets


class FastPathTests(SynchronousTestCase):
    def test_fast_path_matches_general_path(self) -> None:
        """push()'s in-order fast path gives exactly what the general path gives: the same
        packets released at the same time and the same counters (RFC 3550 §A.1 rules),
        on random streams with reordering, loss, duplicates, wrap, jumps and new SSRCs."""
        for seed in range(20):
            rng = random.Random(seed)
            packets = _stream(rng, 600)
            fast = JitterBuffer()
            general = JitterBuffer()
            general_calls = 0
            real_general = fast._push_general

            def counting(packet: RTPPacket, real=real_general) -> list[RTPPacket]:
                nonlocal general_calls
                general_calls += 1
                return real(packet)

            fast._push_general = counting  # type: ignore[method-assign]
            for packet in packets:
                self.assertEqual(fast.push(packet), general._push_general(packet))
                self.assertEqual(
                    (fast.played, fast.lost, fast.late, fast.duplicates, len(fast)),
                    (general.played, general.lost, general.late, general.duplicates,
                     len(general)),
                )
            self.assertEqual(fast.flush(), general.flush())
            # Both paths were exercised: the comparison above is not vacuous.
            self.assertGreater(len(packets) - general_calls, len(packets) // 4)
            self.assertGreater(general_calls, 0)

    def test_fast_path_not_taken_out_of_state(self) -> None:
        """The next sequence number from another SSRC restarts the stream (RFC 3550 §8.2)."""
        buffer = JitterBuffer()
        feed(buffer, [0, 1])
        out = buffer.push(pkt(2, ssrc=2))
        self.assertEqual([p.ssrc for p in out], [2])
        self.assertEqual(buffer._ssrc, 2)



class InOrderTests(SynchronousTestCase):
    """``in_order`` is push()'s fast path for a receiver that has no packet object yet."""

    def test_next_packet_counts_as_played(self) -> None:
        buffer = JitterBuffer()
        feed(buffer, [10])
        self.assertTrue(buffer.in_order(11, 1))
        self.assertEqual(buffer.played, 2)
        # ... and the stream goes on from there, as if push() had played it.
        self.assertEqual([p.sequence for p in buffer.push(pkt(12))], [12])

    def test_anything_else_changes_nothing(self) -> None:
        """Another SSRC, a gap, a buffered packet or no stream yet: False, state untouched,
        so the caller's push() applies the RFC 3550 §A.1 rules as before."""
        fresh = JitterBuffer()
        self.assertFalse(fresh.in_order(0, 1))
        buffer = JitterBuffer()
        feed(buffer, [10])
        for seq, ssrc in ((11, 2), (13, 1), (10, 1)):
            self.assertFalse(buffer.in_order(seq, ssrc))
        self.assertEqual((buffer.played, buffer._next), (1, 11))
        buffer.push(pkt(13))
        self.assertFalse(buffer.in_order(11, 1))
        self.assertEqual([p.sequence for p in buffer.push(pkt(11))], [11])

    def test_wraps_at_16_bits(self) -> None:
        buffer = JitterBuffer()
        feed(buffer, [0xFFFF])
        self.assertTrue(buffer.in_order(0, 1))
        self.assertTrue(buffer.in_order(1, 1))
