"""Tests for voiptwisted.rtp.packet: RTP (RFC 3550 §5.1), RTCP (§6.4) and Appendix A stats."""

from __future__ import annotations

import contextlib
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.rtp.packet import (
    Goodbye,
    ReceiverReport,
    ReportBlock,
    RTCPPacket,
    RTPPacket,
    RTPParseError,
    RTPStats,
    SenderReport,
    SourceDescription,
    build_rtcp,
    ntp_middle32,
    ntp_timestamp,
    parse_rtcp,
)

# A PCMU packet: V=2, M=1, PT=0, seq 0x1234, ts 0xDEADBEEF, SSRC 0x01020304.
WIRE = bytes.fromhex("80801234deadbeef01020304") + b"\xff" * 160


class RTPPacketTests(SynchronousTestCase):
    def test_parse_fixed_header(self) -> None:
        """RFC 3550 §5.1: fixed header fields are read from their bit positions."""
        p = RTPPacket.parse(WIRE)
        self.assertEqual(p.version, 2)
        self.assertTrue(p.marker)
        self.assertEqual(p.payload_type, 0)
        self.assertEqual(p.sequence, 0x1234)
        self.assertEqual(p.timestamp, 0xDEADBEEF)
        self.assertEqual(p.ssrc, 0x01020304)
        self.assertEqual(p.csrc, [])
        self.assertFalse(p.extension)
        self.assertEqual(p.padding, 0)
        self.assertEqual(p.payload, b"\xff" * 160)
        self.assertEqual(bytes(p), WIRE)

    def test_csrc_extension_padding_round_trip(self) -> None:
        """RFC 3550 §5.1/§5.3.1: CSRC list, header extension and padding survive a round trip."""
        p = RTPPacket(
            payload_type=8,
            sequence=65535,
            timestamp=2**32 - 1,
            ssrc=7,
            payload=b"abc",
            marker=False,
            csrc=[1, 2, 3],
            extension_profile=0xBEDE,
            extension_data=b"\x10\xaa\x00\x00",
            padding=5,
        )
        wire = p.serialize()
        self.assertEqual(wire[0], 0x80 | 0x20 | 0x10 | 3)
        self.assertEqual(wire[-1], 5)
        self.assertEqual(len(wire), 12 + 12 + 4 + 4 + 3 + 5)
        self.assertEqual(RTPPacket.parse(wire), p)

    def test_parse_accepts_memoryview_and_bytearray(self) -> None:
        self.assertEqual(RTPPacket.parse(memoryview(WIRE)), RTPPacket.parse(bytearray(WIRE)))

    def test_version_must_be_2(self) -> None:
        """RFC 3550 §A.1: packets with a version other than 2 are invalid."""
        for version in (0, 1, 3):
            bad = bytes([(version << 6) | (WIRE[0] & 0x3F)]) + WIRE[1:]
            with self.assertRaises(RTPParseError):
                RTPPacket.parse(bad)

    def test_too_short(self) -> None:
        for n in range(12):
            with self.assertRaises(RTPParseError):
                RTPPacket.parse(WIRE[:n])

    def test_csrc_count_past_end(self) -> None:
        """RFC 3550 §A.1: the CSRC count must be consistent with the packet length."""
        with self.assertRaises(RTPParseError):
            RTPPacket.parse(bytes([0x8F]) + WIRE[1:12] + b"\x00" * 20)

    def test_extension_length_past_end(self) -> None:
        """RFC 3550 §5.3.1: the extension length must fit in the packet."""
        header = bytes([0x90]) + WIRE[1:12]
        with self.assertRaises(RTPParseError):
            RTPPacket.parse(header + struct.pack("!HH", 0xBEDE, 10) + b"\x00" * 8)
        with self.assertRaises(RTPParseError):
            RTPPacket.parse(header + b"\xbe")

    def test_padding_count_invalid(self) -> None:
        """RFC 3550 §5.1/§A.1: the padding count must be non-zero and fit in the payload."""
        header = bytes([0xA0]) + WIRE[1:12]
        with self.assertRaises(RTPParseError):
            RTPPacket.parse(header + b"abc\x00")
        with self.assertRaises(RTPParseError):
            RTPPacket.parse(header + b"abc\x05")
        self.assertEqual(RTPPacket.parse(header + b"abc\x04").payload, b"")
        self.assertEqual(RTPPacket.parse(header + b"abc\x01").payload, b"abc")

    def test_serialize_rejects_out_of_range(self) -> None:
        with self.assertRaises(ValueError):
            RTPPacket(payload_type=128).serialize()
        with self.assertRaises(ValueError):
            RTPPacket(csrc=list(range(16))).serialize()
        with self.assertRaises(ValueError):
            RTPPacket(extension_profile=1, extension_data=b"abc").serialize()

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=80))
    def test_fuzz_raises_only_parse_error(self, data: bytes) -> None:
        """Any input either parses (and round-trips) or raises RTPParseError."""
        try:
            p = RTPPacket.parse(data)
        except RTPParseError:
            return
        self.assertEqual(RTPPacket.parse(p.serialize()), p)


class RTCPTests(SynchronousTestCase):
    def block(self) -> ReportBlock:
        return ReportBlock(
            ssrc=0xCAFEBABE,
            fraction_lost=25,
            cumulative_lost=-3,
            highest_sequence=0x0001_0005,
            jitter=42,
            lsr=0x12345678,
            dlsr=65536,
        )

    def test_sender_report_layout(self) -> None:
        """RFC 3550 §6.4.1: SR header, sender info and report block layout."""
        sr = SenderReport(1, 2, 3, 4, 5, 6, [self.block()])
        wire = sr.serialize()
        self.assertEqual(len(wire), 4 + 24 + 24)
        self.assertEqual(wire[:4], bytes([0x81, 200]) + struct.pack("!H", 12))
        self.assertEqual(wire[4:28], struct.pack("!6I", 1, 2, 3, 4, 5, 6))
        # fraction lost 25, cumulative lost -3 as 24-bit two's complement
        self.assertEqual(wire[32:36], bytes([25, 0xFF, 0xFF, 0xFD]))
        self.assertEqual(parse_rtcp(wire), [sr])

    def test_receiver_report_round_trip(self) -> None:
        """RFC 3550 §6.4.2: RR with report blocks."""
        rr = ReceiverReport(99, [self.block(), ReportBlock(ssrc=5)])
        wire = rr.serialize()
        self.assertEqual(wire[0] & 0x1F, 2)
        self.assertEqual(wire[1], 201)
        self.assertEqual(parse_rtcp(wire), [rr])

    def test_compound_with_sdes_and_bye(self) -> None:
        """RFC 3550 §6.1: a compound packet starts with SR/RR and carries SDES CNAME."""
        compound = build_rtcp(
            ReceiverReport(1),
            SourceDescription({1: "voip@127.0.0.1"}),
            RTCPPacket(204, 0, b"name"),
            Goodbye([1], "hangup"),
        )
        self.assertEqual(len(compound) % 4, 0)
        items = parse_rtcp(compound)
        self.assertEqual(
            items,
            [
                ReceiverReport(1),
                SourceDescription({1: "voip@127.0.0.1"}),
                RTCPPacket(204, 0, b"name"),
                Goodbye([1], "hangup"),
            ],
        )

    def test_compound_must_start_with_report(self) -> None:
        """RFC 3550 §A.2: the first packet of a compound packet is an SR or RR."""
        with self.assertRaises(RTPParseError):
            parse_rtcp(SourceDescription({1: "x"}).serialize())

    def test_lengths_must_add_up(self) -> None:
        """RFC 3550 §A.2: the packet lengths must add up to the datagram length."""
        wire = ReceiverReport(1, [self.block()]).serialize()
        with self.assertRaises(RTPParseError):
            parse_rtcp(wire[:-4])
        with self.assertRaises(RTPParseError):
            parse_rtcp(wire + b"\x80")
        bad_count = bytes([0x82]) + wire[1:]
        with self.assertRaises(RTPParseError):
            parse_rtcp(bad_count)

    def test_version_and_padding(self) -> None:
        """RFC 3550 §A.2: version 2; padding only on the last packet."""
        wire = ReceiverReport(1).serialize()
        with self.assertRaises(RTPParseError):
            parse_rtcp(bytes([0x40]) + wire[1:])
        padded = bytes([0xA0, 201, 0, 2]) + wire[4:8] + b"\x00\x00\x00\x04"
        self.assertEqual(parse_rtcp(padded), [ReceiverReport(1)])
        with self.assertRaises(RTPParseError):
            parse_rtcp(padded + wire)

    @settings(max_examples=500, deadline=None)
    @given(st.binary(max_size=120))
    def test_fuzz_raises_only_parse_error(self, data: bytes) -> None:
        """Any input either parses or raises RTPParseError (RFC 3550 §A.2 checks)."""
        with contextlib.suppress(RTPParseError):
            parse_rtcp(bytes([0x80, 201]) + data)
        with contextlib.suppress(RTPParseError):
            parse_rtcp(data)

    def test_ntp_timestamp(self) -> None:
        """RFC 3550 §4: NTP time counts from 1900; middle 32 bits used in LSR (§6.4.1)."""
        msw, lsw = ntp_timestamp(0.5)
        self.assertEqual(msw, 2_208_988_800)
        self.assertEqual(lsw, 1 << 31)
        self.assertEqual(ntp_middle32(0x11223344, 0x55667788), 0x33445566)


class RTPStatsTests(SynchronousTestCase):
    def test_no_loss(self) -> None:
        stats = RTPStats(ssrc=9)
        for i in range(50):
            stats.update(100 + i, 160 * i, i * 0.02)
        block = stats.report_block(now=1.0)
        self.assertEqual(block.ssrc, 9)
        self.assertEqual(block.cumulative_lost, 0)
        self.assertEqual(block.fraction_lost, 0)
        self.assertEqual(block.highest_sequence, 149)
        self.assertEqual(block.jitter, 0)

    def test_loss_across_sequence_wrap(self) -> None:
        """RFC 3550 §A.1/§A.3: extended sequence numbers across the 16-bit wrap; loss counts."""
        stats = RTPStats(ssrc=1)
        seqs = [65530 + i for i in range(6)] + [0, 1, 3, 4]  # 65536+2 missing
        for n, seq in enumerate(seqs):
            stats.update(seq & 0xFFFF, n * 160, n * 0.02)
        self.assertEqual(stats.extended_max, 65536 + 4)
        self.assertEqual(stats.expected, 11)
        self.assertEqual(stats.lost, 1)
        block = stats.report_block(now=1.0)
        self.assertEqual(block.highest_sequence, 65540)
        self.assertEqual(block.cumulative_lost, 1)
        self.assertEqual(block.fraction_lost, (1 << 8) // 11)
        # Next interval without loss: fraction back to 0, cumulative stays.
        for n, seq in enumerate(range(5, 15), start=20):
            stats.update(seq, n * 160, n * 0.02)
        block = stats.report_block(now=2.0)
        self.assertEqual(block.fraction_lost, 0)
        self.assertEqual(block.cumulative_lost, 1)

    def test_duplicates_make_loss_negative(self) -> None:
        """RFC 3550 §6.4.1: cumulative lost may go negative with duplicates; fraction is 0."""
        stats = RTPStats(ssrc=1)
        for seq in (1, 2, 2, 3):
            stats.update(seq, seq * 160, seq * 0.02)
        block = stats.report_block(now=0.1)
        self.assertEqual(block.cumulative_lost, -1)
        self.assertEqual(block.fraction_lost, 0)

    def test_large_jump_needs_confirmation(self) -> None:
        """RFC 3550 §A.1: a jump beyond MAX_DROPOUT restarts only when the next packet follows."""
        stats = RTPStats(ssrc=1)
        stats.update(10, 0, 0.0)
        self.assertFalse(stats.update(20000, 160, 0.02))
        self.assertEqual(stats.received, 1)
        self.assertTrue(stats.update(20001, 320, 0.04))
        self.assertEqual(stats.base_seq, 20001)
        self.assertEqual(stats.received, 1)

    def test_jitter_estimator(self) -> None:
        """RFC 3550 §A.8: J += (|D| - J) / 16 with D the transit-time difference."""
        stats = RTPStats(ssrc=1, clock_rate=8000)
        stats.update(1, 0, 0.0)
        stats.update(2, 160, 0.02 + 0.01)  # 10 ms late = 80 units
        self.assertAlmostEqual(stats.jitter, 80 / 16)
        stats.update(3, 320, 0.04)  # back on time: |D| = 80 again
        self.assertAlmostEqual(stats.jitter, 80 / 16 + (80 - 80 / 16) / 16)

    def test_jitter_with_timestamp_wrap(self) -> None:
        stats = RTPStats(ssrc=1)
        stats.update(1, 2**32 - 160, 0.0)
        stats.update(2, 0, 0.02)
        self.assertEqual(stats.jitter, 0.0)

    def test_lsr_dlsr(self) -> None:
        """RFC 3550 §6.4.1: LSR is the middle of the SR's NTP time, DLSR in 1/65536 s."""
        stats = RTPStats(ssrc=1)
        stats.update(1, 0, 10.0)
        stats.sender_report_received(0x00010002, 0x00030000, arrival=10.0)
        block = stats.report_block(now=10.5)
        self.assertEqual(block.lsr, 0x00020003)
        self.assertEqual(block.dlsr, 32768)

    def test_cumulative_lost_clamped(self) -> None:
        block = ReportBlock(ssrc=1, cumulative_lost=10**9)
        self.assertEqual(ReportBlock.parse_from(block.serialize(), 0).cumulative_lost, 0x7FFFFF)
