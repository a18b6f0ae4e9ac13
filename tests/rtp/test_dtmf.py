"""Tests for voiptwisted.rtp.dtmf: RFC 4733 telephone-events."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.rtp.dtmf import (
    DTMFEvent,
    DTMFParseError,
    DTMFReceiver,
    DTMFSender,
    digit_to_event,
    event_to_digit,
)


class DTMFEventTests(SynchronousTestCase):
    def test_payload_layout(self) -> None:
        """RFC 4733 §2.3: event (8 bits), E, R, volume (6 bits), duration (16 bits)."""
        self.assertEqual(DTMFEvent(11, True, 10, 800).encode(), bytes([11, 0x8A, 0x03, 0x20]))
        self.assertEqual(DTMFEvent(5, False, 63, 0).encode(), bytes([5, 0x3F, 0, 0]))

    def test_decode_ignores_reserved_bit(self) -> None:
        """RFC 4733 §2.3.3: the R bit is ignored by the receiver."""
        self.assertEqual(DTMFEvent.decode(bytes([1, 0xC5, 0, 160])), DTMFEvent(1, True, 5, 160))

    def test_decode_too_short(self) -> None:
        for n in range(4):
            with self.assertRaises(DTMFParseError):
                DTMFEvent.decode(b"\x01" * n)

    def test_encode_range_checks(self) -> None:
        for bad in (DTMFEvent(256), DTMFEvent(1, volume=64), DTMFEvent(1, duration=65536)):
            with self.assertRaises(ValueError):
                bad.encode()

    def test_event_codes(self) -> None:
        """RFC 4733 §3.2 Table 3: 0-9 -> 0-9, * -> 10, # -> 11, A-D -> 12-15."""
        self.assertEqual([digit_to_event(d) for d in "09*#AD"], [0, 9, 10, 11, 12, 15])
        self.assertEqual(digit_to_event("b"), 13)
        self.assertEqual(event_to_digit(11), "#")
        self.assertIsNone(event_to_digit(16))  # flash is not a DTMF digit
        for bad in ("E", "", "12", " "):
            with self.assertRaises(ValueError):
                digit_to_event(bad)


def event_packets(code: int, timestamp: int) -> list[tuple[int, bytes]]:
    """What a phone sends for one press: start, updates, three identical end packets."""
    packets = [(timestamp, DTMFEvent(code, False, 10, d).encode()) for d in (160, 320, 480)]
    packets += [(timestamp, DTMFEvent(code, True, 10, 640).encode())] * 3
    return packets


class DTMFReceiverTests(SynchronousTestCase):
    def test_one_digit_per_event(self) -> None:
        """RFC 4733 §2.5.1.4: the end packet is sent three times; one key press is reported."""
        receiver = DTMFReceiver()
        digits = [
            receiver.receive(ts, payload)
            for code, ts in ((1, 1000), (1, 3000), (11, 5000))
            for ts, payload in event_packets(code, ts)
        ]
        self.assertEqual([d for d in digits if d], ["1", "1", "#"])

    def test_lost_start_packet_still_reports(self) -> None:
        """Only end packets arrive: the digit is still reported, once."""
        receiver = DTMFReceiver()
        end = DTMFEvent(4, True, 10, 800).encode()
        self.assertEqual([receiver.receive(8000, end) for _ in range(3)], ["4", None, None])

    def test_late_repeat_of_previous_event_ignored(self) -> None:
        """RFC 4733 §2.5.1.1: events are identified by their RTP timestamp."""
        receiver = DTMFReceiver()
        first = event_packets(2, 100)
        second = event_packets(3, 2000)
        self.assertEqual(receiver.receive(*first[0]), "2")
        self.assertEqual(receiver.receive(*second[0]), "3")
        self.assertIsNone(receiver.receive(*first[-1]))

    def test_timestamp_wrap(self) -> None:
        receiver = DTMFReceiver()
        self.assertEqual(receiver.receive(2**32 - 160, DTMFEvent(7).encode()), "7")
        self.assertEqual(receiver.receive(0, DTMFEvent(8).encode()), "8")

    def test_bad_and_non_dtmf_payloads(self) -> None:
        receiver = DTMFReceiver()
        self.assertIsNone(receiver.receive(1, b"\x01"))
        self.assertIsNone(receiver.receive(2, DTMFEvent(16).encode()))

    def test_history_is_bounded(self) -> None:
        receiver = DTMFReceiver(history=4)
        for ts in range(1000):
            receiver.receive(ts * 1000, DTMFEvent(1).encode())
        self.assertEqual(len(receiver._seen), 4)


class DTMFSenderTests(SynchronousTestCase):
    def test_single_digit_sequence(self) -> None:
        """RFC 4733 §2.5.1: marker on the first packet, updates every 20 ms, 3 end packets."""
        ticks = DTMFSender(duration=0.1, volume=10).packets("5")
        self.assertEqual(len(ticks), 5 + 3)
        markers = [t[0] for t in ticks]
        self.assertEqual(markers, [True] + [False] * 7)
        self.assertEqual({t[1] for t in ticks}, {0})  # same timestamp for the whole event
        events = [DTMFEvent.decode(t[2]) for t in ticks]
        self.assertEqual([e.duration for e in events], [160, 320, 480, 640, 800, 800, 800, 800])
        self.assertEqual([e.end for e in events], [False] * 5 + [True] * 3)
        self.assertEqual({e.event for e in events}, {5})
        self.assertEqual({e.volume for e in events}, {10})

    def test_digit_string_with_gaps(self) -> None:
        sender = DTMFSender(duration=0.06, gap=0.04)
        ticks = sender.packets("1#")
        per_event = 3 + 3
        self.assertEqual(len(ticks), 2 * per_event + 2)
        self.assertEqual(ticks[per_event : per_event + 2], [None, None])
        second = ticks[per_event + 2 :]
        self.assertTrue(second[0][0])
        self.assertEqual({t[1] for t in second}, {(per_event + 2) * 160})
        self.assertEqual(DTMFEvent.decode(second[0][2]).event, 11)

    def test_sender_feeds_receiver(self) -> None:
        receiver = DTMFReceiver()
        got = [
            receiver.receive(1000 + t[1], t[2])
            for t in DTMFSender().packets("123*#ABCD0")
            if t is not None
        ]
        self.assertEqual("".join(d for d in got if d), "123*#ABCD0")

    def test_rejects_invalid(self) -> None:
        with self.assertRaises(ValueError):
            DTMFSender().packets("12x")
        with self.assertRaises(ValueError):
            DTMFSender(duration=9.0)
        with self.assertRaises(ValueError):
            DTMFSender(volume=70)
