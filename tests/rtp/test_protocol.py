"""Tests for voiptwisted.rtp.protocol: RTP send/receive, latching, pacing, DTMF, ports."""

from __future__ import annotations

import itertools
import os
import socket
import struct
from typing import Any

import numpy as np
from twisted.internet import reactor, task
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactor
from twisted.trial import unittest

from voiptwisted.codecs import CODECS
from voiptwisted.codecs.g711 import alaw_decode, alaw_encode
from voiptwisted.media.pacer import Pacer
from voiptwisted.media.session import Session
from voiptwisted.rtp.dtmf import DTMFSender
from voiptwisted.rtp.latch import PROBATION, RELATCH_AFTER
from voiptwisted.rtp.packet import RTPPacket, SenderReport, parse_rtcp
from voiptwisted.rtp.protocol import (
    MAX_READY_PER_READ,
    RTCP_TICKS,
    PortAllocator,
    ReadMultiplexer,
    RealtimeTransportProtocol,
    read_multiplexer,
)
from voiptwisted.rtp.srtp import SRTPContext
from voiptwisted.sdp import CryptoAttribute

SDP_PEER = ("192.0.2.1", 4000)
NAT_PEER = ("198.51.100.7", 33333)


class FakePort:
    """Stands in for a listening UDP port: records writes."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.stopped = False

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def stopListening(self) -> None:
        self.stopped = True


class UDPReactor:
    """Just enough of IReactorUDP to bind RTP ports in memory."""

    def listenUDP(self, port: int, protocol: object, interface: str = "",
                  maxPacketSize: int = 8192) -> FakePort:
        return FakePort()


class FakeDialog:
    call_id = "call-1"

    def __init__(self) -> None:
        self.byes = 0

    def bye(self) -> None:
        self.byes += 1


class Recorder(Session):
    def __init__(self, dialog: object, **kwargs: object) -> None:
        super().__init__(dialog, **kwargs)
        self.audio: list[np.ndarray] = []
        self.digits: list[str] = []
        self.events: list[str] = []

    def start(self) -> None:
        self.events.append("start")

    def stop(self) -> None:
        self.events.append("stop")

    def audio_received(self, samples: np.ndarray) -> None:
        self.audio.append(samples)

    def dtmf_received(self, digit: str) -> None:
        self.digits.append(digit)


def make(srtp: SRTPContext | None = None, **config: object):
    clock = task.Clock()
    pacer = Pacer(clock)
    proto = RealtimeTransportProtocol(reactor=clock, pacer=pacer)
    rtp, rtcp = FakePort(), FakePort()
    proto.transport = rtp
    proto.ports = (rtp, rtcp)
    config.setdefault("telephone_event_pt", 101)
    proto.configure(remote=SDP_PEER, codec=CODECS["PCMA"], payload_type=8, srtp=srtp, **config)
    session = Recorder(FakeDialog())
    session.attach(proto, clock)
    proto.start(session)
    return proto, clock, rtp, rtcp, session


def audio_packet(seq: int, value: int = 1000, pt: int = 8, ssrc: int = 0xABCD) -> bytes:
    payload = alaw_encode(np.full(160, value, np.int16))
    return RTPPacket(payload_type=pt, sequence=seq, timestamp=seq * 160, ssrc=ssrc,
                     payload=payload).serialize()


def frames(n: int, start: int = 0) -> np.ndarray:
    return np.concatenate([np.full(160, 100 * (start + i + 1), np.int16) for i in range(n)])


class SendTests(unittest.SynchronousTestCase):
    def test_paced_send_and_timestamps(self) -> None:
        """RFC 3550 §5.1: seq +1 per packet, timestamp +160 per 20 ms, marker per talkspurt."""
        proto, clock, rtp, _, session = make()
        session.send_audio(frames(3))
        clock.advance(0.02)
        self.assertEqual(len(rtp.sent), 1)
        for _ in range(2):
            clock.advance(0.02)
        packets = [RTPPacket.parse(d) for d, _ in rtp.sent]
        self.assertEqual([a for _, a in rtp.sent], [SDP_PEER] * 3)
        self.assertEqual([p.marker for p in packets], [True, False, False])
        seqs = [p.sequence for p in packets]
        self.assertEqual([(s - seqs[0]) & 0xFFFF for s in seqs], [0, 1, 2])
        ts = [p.timestamp for p in packets]
        self.assertEqual([(t - ts[0]) & 0xFFFFFFFF for t in ts], [0, 160, 320])
        self.assertEqual({p.ssrc for p in packets}, {proto.ssrc})
        decoded = np.concatenate([alaw_decode(p.payload) for p in packets])
        np.testing.assert_allclose(decoded, frames(3), atol=20)
        self.assertEqual(proto.stats.packets_sent, 3)

    def test_timestamps_continuous_across_silence(self) -> None:
        """Issue 4 item 6: silence is not sent, but the media clock keeps running."""
        _, clock, rtp, _, session = make()
        session.send_audio(frames(1))
        clock.advance(0.02)
        for _ in range(5):
            clock.advance(0.02)
        session.send_audio(frames(1))
        clock.advance(0.02)
        first, second = (RTPPacket.parse(d) for d, _ in rtp.sent)
        self.assertEqual((second.timestamp - first.timestamp) & 0xFFFFFFFF, 6 * 160)
        self.assertEqual((second.sequence - first.sequence) & 0xFFFF, 1)
        self.assertTrue(second.marker)

    def test_late_tick_keeps_clock(self) -> None:
        """A stalled reactor (five ticks late) sends the due frames with their own timestamps."""
        proto, clock, rtp, _, session = make()
        session.send_audio(frames(10))
        clock.advance(0.02)
        clock.advance(0.10)
        packets = [RTPPacket.parse(d) for d, _ in rtp.sent]
        self.assertEqual(len(packets), 4)
        ts = [(p.timestamp - packets[0].timestamp) & 0xFFFFFFFF for p in packets]
        self.assertEqual(ts, [0, 3 * 160, 4 * 160, 5 * 160])
        self.assertEqual(proto.stats.skipped_ticks, 2)

    def test_refused_send_is_counted(self) -> None:
        """A datagram the socket refuses (EAGAIN on a full send buffer) is counted as a
        send failure, not as sent, and the next frame goes out normally."""
        proto, clock, rtp, _, session = make()
        refused = [True]

        def write(data: bytes, addr: tuple[str, int]) -> None:
            if refused.pop() if refused else False:
                raise BlockingIOError(11, "Resource temporarily unavailable")
            rtp.sent.append((data, addr))

        rtp.write = write
        session.send_audio(frames(2))
        clock.advance(0.02)
        clock.advance(0.02)
        self.assertEqual((proto.stats.send_failures, proto.stats.packets_sent), (1, 1))
        self.assertEqual(len(rtp.sent), 1)

    def test_ptime_40(self) -> None:
        """RFC 4566 §6 a=ptime:40: two frames per packet."""
        _, clock, rtp, _, session = make(ptime=40)
        session.send_audio(frames(4))
        for _ in range(4):
            clock.advance(0.02)
        packets = [RTPPacket.parse(d) for d, _ in rtp.sent]
        self.assertEqual([len(p.payload) for p in packets], [320, 320])
        self.assertEqual((packets[1].timestamp - packets[0].timestamp) & 0xFFFFFFFF, 320)

    def test_recvonly_sends_nothing(self) -> None:
        """RFC 3264 §5.1: with recvonly we must not send media."""
        _, clock, rtp, _, session = make(direction="recvonly")
        session.send_audio(frames(3))
        for _ in range(3):
            clock.advance(0.02)
        self.assertEqual(rtp.sent, [])

    def test_send_dtmf(self) -> None:
        """RFC 4733 §2.5.1: one event = marker start, updates, three end packets, one timestamp."""
        proto, clock, rtp, _, session = make()
        session.send_dtmf("5")
        for _ in range(12):
            clock.advance(0.02)
        packets = [RTPPacket.parse(d) for d, _ in rtp.sent]
        self.assertTrue(all(p.payload_type == 101 for p in packets))
        self.assertEqual(len(packets), 5 + 3)
        self.assertEqual([p.marker for p in packets], [True] + [False] * 7)
        self.assertEqual(len({p.timestamp for p in packets}), 1)
        self.assertEqual([p.payload[1] >> 7 for p in packets], [0] * 5 + [1] * 3)
        self.assertEqual(packets[0].payload[0], 5)
        self.assertEqual(proto.stats.dtmf_sent, 1)

    def test_dtmf_queue_bounded(self) -> None:
        """A flood of digits is refused rather than queued without bound."""
        proto, _, _, _, _ = make()
        proto.send_dtmf("1" * 500)
        self.assertEqual(proto.stats.dtmf_sent, 0)
        proto.send_dtmf("12")
        self.assertEqual(proto.stats.dtmf_sent, 2)

    def test_dtmf_queued_before_start(self) -> None:
        """Digits sent before media starts are delivered once the session is attached."""
        clock = task.Clock()
        proto = RealtimeTransportProtocol(reactor=clock, pacer=Pacer(clock))
        port = FakePort()
        proto.transport, proto.ports = port, (port, FakePort())
        proto.configure(remote=SDP_PEER, codec=CODECS["PCMA"], payload_type=8,
                        telephone_event_pt=101)
        session = Recorder(FakeDialog())
        session.send_dtmf("1")
        session.attach(proto, clock)
        proto.start(session)
        clock.advance(0.02)
        self.assertEqual(RTPPacket.parse(port.sent[0][0]).payload_type, 101)

    def test_rtcp_sender_report(self) -> None:
        """RFC 3550 §6.1/§6.2/§6.4.1: SR + SDES CNAME every ~5 s to port+1 with our counts."""
        proto, clock, _rtp, rtcp, session = make()
        session.send_audio(frames(2))
        for _ in range(RTCP_TICKS + 2):
            clock.advance(0.02)
        self.assertEqual(len(rtcp.sent), 1)
        data, addr = rtcp.sent[0]
        self.assertEqual(addr, (SDP_PEER[0], SDP_PEER[1] + 1))
        report, sdes = parse_rtcp(data)
        self.assertIsInstance(report, SenderReport)
        # RFC 3550 §6.1: every compound RTCP packet carries an SDES CNAME.
        self.assertEqual(sdes.chunks, {proto.ssrc: proto.cname})
        self.assertEqual((report.ssrc, report.packet_count, report.octet_count),
                         (proto.ssrc, 2, 320))

    def test_rtcp_mux(self) -> None:
        """RFC 5761 §4: with rtcp-mux, RTCP goes to the RTP port and is demultiplexed."""
        proto, clock, rtp, rtcp, _ = make(rtcp_mux=True)
        for _ in range(RTCP_TICKS + 2):
            clock.advance(0.02)
        self.assertEqual(rtcp.sent, [])
        self.assertEqual(rtp.sent[-1][1], SDP_PEER)
        proto.datagramReceived(rtp.sent[-1][0], SDP_PEER)
        self.assertEqual(proto.stats.rtcp_received, 1)
        self.assertEqual(proto.stats.packets_received, 0)


class FootprintTests(unittest.SynchronousTestCase):
    """Memory and work per call (issue 16): what a running call holds and builds."""

    def test_call_state_lives_in_slots(self) -> None:
        """Every attribute of a running call is a slot: an attribute added without its slot
        brings back the per-call instance dict (2.5 KB once past CPython's shared keys)."""
        proto, clock, _, _, session = make()
        for seq in range(1, 4):
            proto.datagramReceived(audio_packet(seq), SDP_PEER)
        proto.datagramReceived(audio_packet(6), SDP_PEER)
        session.send_audio(frames(2))
        proto.send_dtmf("1")
        clock.advance(0.02 * (RTCP_TICKS + 20))
        proto.datagramReceived(audio_packet(7), SDP_PEER)
        proto.refresh_stats()
        proto.stop()
        self.assertEqual(vars(proto), {})

    def test_send_buffer_holds_one_packet(self) -> None:
        """The reusable send buffer is sized by the packets sent (20 ms: 12 + 160 bytes),
        not for the largest ptime, and grows when a longer packet is sent."""
        proto, clock, rtp, _, session = make()
        session.send_audio(frames(1))
        clock.advance(0.02)
        self.assertEqual(len(proto._tx), 172)
        proto.configure(remote=SDP_PEER, codec=CODECS["PCMA"], payload_type=8, ptime=40)
        session.send_audio(frames(2, start=1))
        clock.advance(0.04)
        self.assertEqual(len(proto._tx), 332)
        packets = [RTPPacket.parse(d) for d, _ in rtp.sent]
        self.assertEqual([len(p.payload) for p in packets], [160, 320])
        np.testing.assert_allclose(alaw_decode(packets[1].payload), frames(2, start=1), atol=20)

    def test_in_order_packet_builds_no_packet_object(self) -> None:
        """The usual packet (next in sequence, nothing buffered) is decoded in place: no
        RTPPacket per packet; the stream's first and reordered ones still go through the
        jitter buffer (RFC 3550 §A.1 checks)."""
        import voiptwisted.rtp.protocol as module

        proto, _, _, _, session = make()
        built = []
        real = module.RTPPacket

        def counting(*args: Any, **kwargs: Any) -> RTPPacket:
            built.append(args)
            return real(*args, **kwargs)

        self.patch(module, "RTPPacket", counting)
        for seq, value in ((1, 1000), (2, 2000), (3, 3000)):
            proto.datagramReceived(audio_packet(seq, value), SDP_PEER)
        self.assertEqual([args[1] for args in built], [1])
        proto.datagramReceived(audio_packet(5, 5000), SDP_PEER)
        proto.datagramReceived(audio_packet(4, 4000), SDP_PEER)
        self.assertEqual([args[1] for args in built], [1, 5, 4])
        levels = [int(np.median(frame)) for frame in session.audio]
        self.assertEqual(len(levels), 5)
        for level, value in zip(levels, (1000, 2000, 3000, 4000, 5000), strict=True):
            self.assertLess(abs(level - value), value // 20)


class ReceiveTests(unittest.SynchronousTestCase):
    def test_latching(self) -> None:
        """RFC 4961 §4: send to the SDP address until the peer's packets arrive from another
        (NAT) address with nothing competing, then to it: after a probation run of
        in-sequence packets (RFC 3550 §8.2, Appendix A.1)."""
        proto, clock, rtp, _, session = make()
        session.send_audio(frames(1))
        clock.advance(0.02)
        self.assertEqual(rtp.sent[-1][1], SDP_PEER)
        for seq in range(1, PROBATION + 1):
            self.assertFalse(proto.latched)
            proto.datagramReceived(audio_packet(seq), NAT_PEER)
        self.assertTrue(proto.latched)
        session.send_audio(frames(1))
        clock.advance(0.02)
        self.assertEqual(rtp.sent[-1][1], NAT_PEER)
        self.assertEqual(proto.rtcp_remote, (NAT_PEER[0], NAT_PEER[1] + 1))
        self.assertEqual(proto.stats.packets_received, 1)
        self.assertEqual(proto.stats.rejected_source, PROBATION - 1)

    def test_sdp_address_latches_at_once(self) -> None:
        """The address the signalling gave is trusted: its first packet is taken."""
        proto, _, _, _, session = make()
        proto.datagramReceived(audio_packet(1), SDP_PEER)
        self.assertTrue(proto.latched)
        self.assertEqual(len(session.audio), 1)

    def test_other_source_ignored_while_latched(self) -> None:
        """After latching, another source is refused until the latched one is silent for
        RELATCH_AFTER seconds and the new one has sent an in-sequence run."""
        proto, clock, _, _, _session = make()
        proto.datagramReceived(audio_packet(1), SDP_PEER)
        other = ("203.0.113.9", 5000)
        for seq in range(10, 20):
            proto.datagramReceived(audio_packet(seq, ssrc=7), other)
        self.assertEqual(proto.stats.rejected_source, 10)
        self.assertEqual(proto.remote, SDP_PEER)
        clock.advance(RELATCH_AFTER)
        for seq in range(20, 20 + PROBATION):
            proto.datagramReceived(audio_packet(seq, ssrc=7), other)
        self.assertEqual(proto.remote, other)

    def test_audio_decoded_to_session(self) -> None:
        """ISession.audio_received gets int16 frames of 160 samples at 8 kHz."""
        proto, _, _, _, session = make()
        proto.datagramReceived(audio_packet(1, 1000), SDP_PEER)
        self.assertEqual(len(session.audio), 1)
        self.assertEqual(session.audio[0].dtype, np.int16)
        self.assertEqual(session.audio[0].shape, (160,))
        self.assertLess(abs(float(session.audio[0].mean()) - 1000), 40)
        self.assertEqual(proto.stats.packets_received, 1)

    def test_csrc_extension_padding_packets_decoded(self) -> None:
        """RFC 3550 §5.1/§5.3.1: packets with CSRCs, a header extension or padding deliver
        the same audio as plain ones (the plain-header fast path and the full parser agree)."""
        proto, _, _, _, session = make()
        payload = alaw_encode(np.full(160, 1000, np.int16))
        variants = [
            RTPPacket(payload_type=8, sequence=1, timestamp=160, ssrc=7, payload=payload),
            RTPPacket(payload_type=8, sequence=2, timestamp=320, ssrc=7, payload=payload,
                      csrc=[1, 2]),
            RTPPacket(payload_type=8, sequence=3, timestamp=480, ssrc=7, payload=payload,
                      extension_profile=0xBEDE, extension_data=b"\x10\xaa\x00\x00"),
            RTPPacket(payload_type=8, sequence=4, timestamp=640, ssrc=7, payload=payload,
                      padding=4, marker=True),
        ]
        for packet in variants:
            proto.datagramReceived(packet.serialize(), SDP_PEER)
        self.assertEqual(len(session.audio), 4)
        for frame in session.audio[1:]:
            np.testing.assert_array_equal(frame, session.audio[0])
        self.assertEqual(proto.stats.octets_received, 4 * 160)
        self.assertEqual(proto.refresh_stats().lost, 0)

    def test_jitter_reorder_and_duplicates(self) -> None:
        """Issue 4 item 2: reordered packets are played in order, a repeat is dropped."""
        proto, _, _, _, session = make()
        for seq in (10, 12, 11, 11, 13):
            proto.datagramReceived(audio_packet(seq, 100 * seq), SDP_PEER)
        levels = [round(float(f.mean()) / 100) for f in session.audio]
        self.assertEqual(levels, [10, 11, 12, 13])
        stats = proto.refresh_stats()
        self.assertEqual(stats.duplicates + stats.late, 1)

    def test_dtmf_once_per_press(self) -> None:
        """RFC 4733 §2.5.1.4: the three end packets and updates are one key press."""
        proto, _, _, _, session = make()
        sender = DTMFSender()
        seq = 100
        for entry in sender.packets("19#"):
            if entry is None:
                continue
            marker, offset, payload = entry
            packet = RTPPacket(payload_type=101, sequence=seq, timestamp=1000 + offset,
                               ssrc=55, payload=payload, marker=marker)
            proto.datagramReceived(packet.serialize(), SDP_PEER)
            proto.datagramReceived(packet.serialize(), SDP_PEER)
            seq += 1
        self.assertEqual(session.digits, ["1", "9", "#"])
        self.assertEqual(proto.stats.dtmf_received, 3)

    def test_inactive_delivers_nothing(self) -> None:
        proto, _, _, _, session = make(direction="inactive")
        proto.datagramReceived(audio_packet(1), SDP_PEER)
        self.assertEqual(session.audio, [])

    def test_garbage_never_raises(self) -> None:
        """Bad datagrams are counted and dropped, never raised into the reactor."""
        proto, _, _, _, _session = make()
        rng = np.random.default_rng(7)
        samples = [b"", b"\x80", b"\x80" * 11, b"\x00" * 40, b"\xbf" + b"\x00" * 11]
        samples += [rng.integers(0, 256, int(n), np.uint8).tobytes()
                    for n in rng.integers(0, 300, 300)]
        for data in samples:
            proto.datagramReceived(data, SDP_PEER)
            proto.rtcp_received(data, SDP_PEER)
        self.assertGreater(proto.stats.malformed, 0)
        unknown = proto.stats.unknown_payload
        proto.datagramReceived(audio_packet(1, pt=18), SDP_PEER)
        self.assertEqual(proto.stats.unknown_payload, unknown + 1)

    def test_srtp_tampered_and_replayed_dropped(self) -> None:
        """RFC 3711 §3.3: failing authentication or replay is dropped and counted."""
        ours, theirs = CryptoAttribute.generate(), CryptoAttribute.generate()
        proto, _, _, _, session = make(srtp=SRTPContext(ours, theirs))
        peer = SRTPContext(theirs, ours)
        good = peer.protect(audio_packet(1))
        proto.datagramReceived(good, SDP_PEER)
        proto.datagramReceived(good, SDP_PEER)
        bad = bytearray(peer.protect(audio_packet(2)))
        bad[30] ^= 0xFF
        proto.datagramReceived(bytes(bad), SDP_PEER)
        proto.datagramReceived(audio_packet(3), SDP_PEER)
        stats = proto.refresh_stats()
        self.assertEqual(len(session.audio), 1)
        self.assertEqual((stats.replays, stats.auth_failures), (1, 2))
        self.assertEqual(stats.packets_received, 1)

    def test_srtp_oversized_dropped(self) -> None:
        """Too long for libsrtp: dropped and counted; datagramReceived never raises."""
        ours, theirs = CryptoAttribute.generate(), CryptoAttribute.generate()
        proto, _, _, _, session = make(srtp=SRTPContext(ours, theirs))
        proto.datagramReceived(b"\x80\x08" + bytes(2000), SDP_PEER)
        proto.rtcp_received(b"\x80\xc8" + bytes(2000), SDP_PEER)
        stats = proto.refresh_stats()
        self.assertEqual((stats.auth_failures, stats.packets_received), (2, 0))
        self.assertEqual(session.audio, [])

    def test_srtp_outbound_same_packets_as_plain(self) -> None:
        """SRTP audio is built in the same reused buffer as plain RTP: once unprotected,
        every packet (20 and 40 ms) is byte for byte what the plain stream sends."""
        for ptime in (20, 40):
            ours, theirs = CryptoAttribute.generate(), CryptoAttribute.generate()
            plain, plain_clock, plain_port, _, plain_session = make(ptime=ptime)
            secure, clock, port, _, session = make(srtp=SRTPContext(ours, theirs), ptime=ptime)
            secure.ssrc, secure._sequence, secure._ts_base = (
                plain.ssrc, plain._sequence, plain._ts_base
            )
            for stream_session in (plain_session, session):
                stream_session.send_audio(frames(4))
            for _ in range(4):
                plain_clock.advance(0.02)
                clock.advance(0.02)
            peer = SRTPContext(theirs, ours)
            received = [peer.unprotect(data) for data, _ in port.sent]
            self.assertEqual(received, [data for data, _ in plain_port.sent])
            self.assertEqual(len(received), 4 * 20 // ptime)
            self.assertEqual(secure.stats.packets_sent, plain.stats.packets_sent)
            self.assertEqual(secure.stats.octets_sent, plain.stats.octets_sent)

    def test_srtp_dtmf_protected(self) -> None:
        """RFC 4733 events are SRTP packets too (not sent in clear)."""
        ours, theirs = CryptoAttribute.generate(), CryptoAttribute.generate()
        _, clock, rtp, _, session = make(srtp=SRTPContext(ours, theirs))
        session.send_dtmf("7")
        for _ in range(12):
            clock.advance(0.02)
        peer = SRTPContext(theirs, ours)
        packets = [RTPPacket.parse(peer.unprotect(data)) for data, _ in rtp.sent]
        self.assertEqual([p.payload_type for p in packets], [101] * 8)
        self.assertEqual(packets[0].payload[0], 7)

    def test_srtp_outbound_protected(self) -> None:
        ours, theirs = CryptoAttribute.generate(), CryptoAttribute.generate()
        _, clock, rtp, _, session = make(srtp=SRTPContext(ours, theirs))
        session.send_audio(frames(1))
        clock.advance(0.02)
        data = rtp.sent[0][0]
        self.assertEqual(len(data), 12 + 160 + 10)
        plain = SRTPContext(theirs, ours).unprotect(data)
        self.assertEqual(RTPPacket.parse(plain).payload_type, 8)

    def test_session_error_hangs_up(self) -> None:
        """interfaces.py: an exception in the session ends the call, not the reactor."""
        proto, clock, _, _, session = make()

        def boom(samples: object) -> None:
            raise RuntimeError("app bug")

        session.audio_received = boom  # type: ignore[method-assign]
        proto.datagramReceived(audio_packet(1), SDP_PEER)
        clock.advance(0)
        self.assertEqual(session.dialog.byes, 1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stop(self) -> None:
        """stop() stops the session, leaves the pacer and closes both ports; idempotent."""
        proto, _clock, rtp, rtcp, session = make()
        proto.stop()
        proto.stop()
        self.assertEqual(session.events, ["start", "stop"])
        self.assertTrue(rtp.stopped and rtcp.stopped)
        self.assertNotIn(proto.tick, proto.pacer)
        proto.datagramReceived(audio_packet(1), SDP_PEER)
        self.assertEqual(session.audio, [])


MALLORY = ("203.0.113.66", 6000)


class HijackTests(unittest.SynchronousTestCase):
    """Issue 14 finding 10, reproduced in memory: plain RTP cannot be taken over."""

    def test_spoofed_source_injecting_during_call_dropped(self) -> None:
        """A spoofed source sending in-sequence audio during a call reaches nothing, also
        across a 2 s pause of the peer (voice activity detection, RFC 3551 §4.1): every
        packet is dropped and counted, our audio keeps going to the peer."""
        proto, clock, rtp, _, session = make()
        mallory_seq = 5000
        for seq in range(1, 101):
            if seq == 51:
                for _ in range(100):
                    mallory_seq += 1
                    proto.datagramReceived(audio_packet(mallory_seq, -8000, ssrc=66), MALLORY)
                    clock.advance(0.02)
            proto.datagramReceived(audio_packet(seq, value=1000), SDP_PEER)
            mallory_seq += 1
            proto.datagramReceived(audio_packet(mallory_seq, value=-8000, ssrc=66), MALLORY)
            session.send_audio(frames(1))
            clock.advance(0.02)
        self.assertEqual(proto.stats.rejected_source, 200)
        self.assertEqual(proto.stats.packets_received, 100)
        self.assertTrue(all(float(frame.mean()) > 0 for frame in session.audio))
        self.assertEqual({addr for _, addr in rtp.sent}, {SDP_PEER})

    def test_spray_before_peer_does_not_capture_stream(self) -> None:
        """Mallory sprays the port before the callee's first packet (the SDP address is
        known): once the real peer talks, the stream is the peer's, both ways."""
        proto, clock, rtp, _, session = make()
        for seq in range(1, 51):
            proto.datagramReceived(audio_packet(seq, value=-8000, ssrc=66), MALLORY)
            clock.advance(0.002)
        for seq in range(1, 51):
            proto.datagramReceived(audio_packet(seq, value=1000), SDP_PEER)
            proto.datagramReceived(audio_packet(50 + seq, value=-8000, ssrc=66), MALLORY)
            session.send_audio(frames(1))
            clock.advance(0.02)
        self.assertEqual(proto.remote, SDP_PEER)
        self.assertEqual(rtp.sent[-1][1], SDP_PEER)
        heard = [float(frame.mean()) for frame in session.audio]
        self.assertEqual(sum(1 for mean in heard if mean > 0), 50 - PROBATION + 1)
        self.assertEqual(proto.rtcp_remote, (SDP_PEER[0], SDP_PEER[1] + 1))

    def test_rtcp_from_another_address_ignored(self) -> None:
        """RTCP is taken only from the latched RTP source's IP: a forged receiver report
        neither redirects our reports nor changes the figures."""
        proto, _, _, _, _ = make()
        proto.datagramReceived(audio_packet(1), SDP_PEER)
        forged = self.receiver_report(proto.ssrc, fraction_lost=255)
        proto.rtcp_received(forged, (MALLORY[0], MALLORY[1] + 1))
        self.assertEqual(proto.rtcp_remote, (SDP_PEER[0], SDP_PEER[1] + 1))
        self.assertEqual(proto.stats.remote_fraction_lost, 0)
        self.assertEqual(proto.stats.rejected_rtcp, 1)
        # The peer's own RTCP, from any port of its address, is taken (RFC 3550 §11).
        proto.rtcp_received(self.receiver_report(proto.ssrc, 12), (SDP_PEER[0], 7777))
        self.assertEqual(proto.rtcp_remote, (SDP_PEER[0], 7777))
        self.assertEqual(proto.stats.remote_fraction_lost, 12)

    def test_rtcp_mux_only_from_latched_address(self) -> None:
        """RFC 5761: muxed RTCP must come from the RTP source itself, port included."""
        proto, _, _, _, _ = make(rtcp_mux=True)
        proto.datagramReceived(audio_packet(1), SDP_PEER)
        proto.datagramReceived(self.receiver_report(proto.ssrc, 200), (SDP_PEER[0], 9))
        proto.datagramReceived(self.receiver_report(proto.ssrc, 200), MALLORY)
        self.assertEqual(proto.stats.rejected_rtcp, 2)
        proto.datagramReceived(self.receiver_report(proto.ssrc, 3), SDP_PEER)
        self.assertEqual(proto.stats.remote_fraction_lost, 3)
        self.assertEqual(proto.rtcp_remote, SDP_PEER)

    @staticmethod
    def receiver_report(ssrc: int, fraction_lost: int) -> bytes:
        from voiptwisted.rtp.packet import ReceiverReport, ReportBlock, build_rtcp

        block = ReportBlock(ssrc, fraction_lost, 0, 0, 0, 0, 0)
        return build_rtcp(ReceiverReport(0x5151, [block]))

    def test_legitimate_relatch_after_silence(self) -> None:
        """The peer's NAT binding changes mid-call: its old address falls silent and the
        new one takes over after RELATCH_AFTER and an in-sequence run, not before."""
        proto, clock, rtp, _, session = make()
        for seq in range(1, PROBATION + 1):
            proto.datagramReceived(audio_packet(seq), NAT_PEER)
        self.assertEqual(proto.remote, NAT_PEER)
        rebound = (NAT_PEER[0], NAT_PEER[1] + 10)
        clock.advance(RELATCH_AFTER / 2)
        for seq in range(10, 10 + PROBATION):
            proto.datagramReceived(audio_packet(seq), rebound)
        self.assertEqual(proto.remote, NAT_PEER)
        clock.advance(RELATCH_AFTER / 2)
        proto.datagramReceived(audio_packet(10 + PROBATION), rebound)
        self.assertEqual(proto.remote, rebound)
        session.send_audio(frames(1))
        for _ in range(5):
            clock.advance(0.02)
        self.assertEqual(rtp.sent[-1][1], rebound)
        self.assertEqual(proto.rtcp_remote, (rebound[0], rebound[1] + 1))

    def test_srtp_uses_the_same_latch(self) -> None:
        """SRTP: forged packets fail authentication first; authentic ones from a NAT
        address latch after the same probation run."""
        ours, theirs = CryptoAttribute.generate(), CryptoAttribute.generate()
        proto, _, _, _, session = make(srtp=SRTPContext(ours, theirs))
        peer = SRTPContext(theirs, ours)
        for seq in range(1, 11):
            proto.datagramReceived(audio_packet(seq, ssrc=66), MALLORY)
        self.assertEqual(proto.refresh_stats().auth_failures, 10)
        for seq in range(1, PROBATION + 1):
            proto.datagramReceived(peer.protect(audio_packet(seq)), NAT_PEER)
        self.assertEqual(proto.remote, NAT_PEER)
        self.assertEqual(len(session.audio), 1)
        self.assertEqual(proto.stats.rejected_source, PROBATION - 1)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class PortTests(unittest.TestCase):
    def test_even_ports_in_range(self) -> None:
        """RFC 3550 §11: RTP on an even port, RTCP on the next odd one, inside the range."""
        allocator = PortAllocator((41000, 41020))
        protos = []
        for _ in range(5):
            proto = RealtimeTransportProtocol(reactor=reactor, pacer=Pacer(task.Clock()))
            port = allocator.bind(reactor, proto, "127.0.0.1")
            protos.append(proto)
            self.assertEqual(port % 2, 0)
            self.assertTrue(41000 <= port < 41020)
            self.assertEqual(proto.ports[1].getHost().port, port + 1)
        self.assertEqual(len({p.local_port for p in protos}), 5)
        for proto in protos:
            proto.stop()

    def test_busy_port_skipped(self) -> None:
        """EADDRINUSE: another pair is tried; every pair tried then CannotListenError."""
        busy = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 42000))
        allocator = PortAllocator((42000, 42004))
        proto = RealtimeTransportProtocol(reactor=reactor, pacer=Pacer(task.Clock()))
        self.assertEqual(allocator.bind(reactor, proto, "127.0.0.1"), 42002)
        other = RealtimeTransportProtocol(reactor=reactor, pacer=Pacer(task.Clock()))
        with self.assertRaises(CannotListenError):
            allocator.bind(reactor, other, "127.0.0.1")
        proto.stop()

    def test_ports_random_not_sequential(self) -> None:
        """Issue 14 finding 10: the next call's port cannot be predicted from the last one's
        (it was always +2)."""
        allocator = PortAllocator((20000, 60000))
        memory = UDPReactor()
        ports = []
        for _ in range(20):
            proto = RealtimeTransportProtocol(reactor=task.Clock(), pacer=Pacer(task.Clock()))
            ports.append(allocator.bind(memory, proto, "127.0.0.1"))
        self.assertTrue(all(port % 2 == 0 and 20000 <= port < 60000 for port in ports))
        self.assertEqual(len(set(ports)), 20)
        steps = {b - a for a, b in itertools.pairwise(ports)}
        self.assertNotEqual(steps, {2})
        self.assertGreater(len(steps), 10)

    def test_bind_attempts_bounded(self) -> None:
        """Every pair busy: at most ``attempts`` distinct pairs are tried, then
        CannotListenError (never a loop over the whole range)."""
        tried = []

        class Busy(UDPReactor):
            def listenUDP(self, port: int, protocol: object, interface: str = "",
                          maxPacketSize: int = 8192) -> FakePort:
                tried.append(port)
                raise CannotListenError(interface, port, "busy")

        allocator = PortAllocator((20000, 60000), attempts=16)
        proto = RealtimeTransportProtocol(reactor=task.Clock(), pacer=Pacer(task.Clock()))
        with self.assertRaises(CannotListenError):
            allocator.bind(Busy(), proto, "127.0.0.1")
        self.assertEqual(len(tried), 16)
        self.assertEqual(len(set(tried)), 16)

    def test_free_first_pair_costs_one_random_draw(self) -> None:
        """Ports are drawn one at a time: a call whose first random pair is free reads
        the system's CSPRNG once, not ``attempts`` times (issue 16: 167 µs per call)."""
        import random

        from voiptwisted.rtp import protocol as rtp_module

        draws = []

        class Counting(random.SystemRandom):
            """Counts the ports asked of the CSPRNG (not its raw reads, whose number
            varies with rejection sampling)."""

            def randrange(self, *args: Any, **kwargs: Any) -> int:
                draws.append(1)
                return super().randrange(*args, **kwargs)

            def sample(self, population: Any, k: int, **kwargs: Any) -> list[Any]:
                draws.append(k)
                return super().sample(population, k, **kwargs)

        self.patch(rtp_module, "_RANDOM", Counting())
        allocator = PortAllocator((20000, 60000))
        proto = RealtimeTransportProtocol(reactor=task.Clock(), pacer=Pacer(task.Clock()))
        port = allocator.bind(UDPReactor(), proto, "127.0.0.1")
        self.assertTrue(20000 <= port < 60000 and port % 2 == 0)
        self.assertEqual(sum(draws), 1)

    def test_clock_is_injected_never_the_global_reactor(self) -> None:
        """Issue 13: RTP and STUN take their clock from the caller (the service's reactor,
        passed down through MediaConfig); none falls back to the global reactor."""
        from voiptwisted.rtp.stun import StunClient, StunProtocol

        with self.assertRaises(TypeError):
            RealtimeTransportProtocol()  # type: ignore[call-arg]
        with self.assertRaises(TypeError):
            StunClient(lambda data, addr: None)  # type: ignore[call-arg]
        with self.assertRaises(TypeError):
            StunProtocol()  # type: ignore[call-arg]
        self.assertFalse(StunProtocol.noisy)

    def test_call_sockets_are_not_noisy(self) -> Any:
        """Issue 13: a call's RTP and RTCP protocols log no "Starting/Stopping protocol"."""
        from twisted.internet import defer
        from twisted.logger import formatEvent, globalLogPublisher

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        proto = RealtimeTransportProtocol(reactor=reactor, pacer=Pacer(task.Clock()))
        PortAllocator((45000, 45100), multiplex=False).bind(reactor, proto, "127.0.0.1")
        stopped = [defer.maybeDeferred(port.stopListening) for port in proto.ports]

        def check(_: object) -> None:
            text = [formatEvent(e) for e in events]
            self.assertFalse([t for t in text if "Starting protocol" in t], text)
            self.assertFalse([t for t in text if "Stopping protocol" in t], text)

        return defer.gatherResults(stopped).addCallback(check)

    def test_ipv6(self) -> None:
        """IPv6 sockets work the same way (::1)."""
        proto = RealtimeTransportProtocol(reactor=reactor, pacer=Pacer(task.Clock()))
        port = PortAllocator((43000, 43100)).bind(reactor, proto, "::1")
        self.assertEqual(proto.ports[0].getHost().host, "::1")
        self.assertEqual(proto.ports[0].getHost().port, port)
        proto.stop()

    def test_receive_buffer_enlarged(self) -> None:
        """notes/performance.md: RTP sockets ask for a larger SO_RCVBUF than the default."""
        proto = RealtimeTransportProtocol(reactor=reactor, pacer=Pacer(task.Clock()))
        PortAllocator((44000, 44100)).bind(reactor, proto, "127.0.0.1")
        size = proto.ports[0].socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        default = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(default.close)
        self.assertGreater(size, default.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
        proto.stop()

    async def test_no_leak_after_2000_calls(self) -> None:
        """Issue 4 item 1: 2000 open/close cycles leave no socket open."""
        allocator = PortAllocator((45000, 47000))
        pacer = Pacer(task.Clock())
        warm_up = RealtimeTransportProtocol(reactor=reactor, pacer=pacer)
        allocator.bind(reactor, warm_up, "127.0.0.1")
        warm_up.stop()
        await task.deferLater(reactor, 0.05, lambda: None)
        before = open_fds()
        for _batch in range(20):
            for _ in range(100):
                proto = RealtimeTransportProtocol(reactor=reactor, pacer=pacer)
                allocator.bind(reactor, proto, "127.0.0.1")
                proto.stop()
            await task.deferLater(reactor, 0, lambda: None)
        await task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(open_fds(), before)

    def test_sockets_read_through_one_reader(self) -> None:
        """notes/performance.md: every call's RTP and RTCP sockets sit behind the reactor's one
        ReadMultiplexer, not in the reactor's own read set; the last call out removes it."""
        mux = read_multiplexer(reactor)
        self.assertIsNotNone(mux)
        allocator = PortAllocator((48000, 48100))
        protos = [RealtimeTransportProtocol(reactor=reactor, pacer=Pacer(task.Clock()))
                  for _ in range(3)]
        for proto in protos:
            allocator.bind(reactor, proto, "127.0.0.1")
            self.assertIs(proto.multiplexer, mux)
        readers = reactor.getReaders()
        self.assertIn(mux, readers)
        for proto in protos:
            for port in proto.ports:
                self.assertNotIn(port, readers)
        self.assertEqual(len(mux), 6)
        for proto in protos:
            proto.stop()
        self.assertEqual(len(mux), 0)
        self.assertNotIn(mux, reactor.getReaders())

    def test_one_read_drains_a_bounded_number_of_sockets(self) -> None:
        """Under load the reader yields to the reactor (and the pacer's timer) after
        MAX_READY_PER_READ sockets; the rest are read on the next calls, none starved."""
        pairs = [socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM) for _ in range(40)]
        for pair in pairs:
            for end in pair:
                self.addCleanup(end.close)
        read: list[int] = []

        class Port:
            def __init__(self, sock: socket.socket) -> None:
                self.sock = sock
                sock.setblocking(False)

            def fileno(self) -> int:
                return self.sock.fileno()

            def stopReading(self) -> None:
                pass

            def doRead(self) -> None:
                read.append(self.sock.fileno())
                self.sock.recv(64)

        mux = ReadMultiplexer(MemoryReactor())
        self.addCleanup(mux._epoll.close)
        for receiving, sending in pairs:
            mux.add(Port(receiving))
            sending.send(b"x")
        mux.doRead()
        self.assertEqual(len(read), MAX_READY_PER_READ)
        mux.doRead()
        self.assertEqual(sorted(read), sorted(receiving.fileno() for receiving, _ in pairs))
        mux.doRead()
        self.assertEqual(len(read), 40)

    async def test_unmultiplexed_ports_still_work(self) -> None:
        """multiplex=False leaves the sockets to the reactor; packets still arrive."""
        proto = RealtimeTransportProtocol(reactor=reactor, pacer=Pacer(task.Clock()))
        PortAllocator((48200, 48300), multiplex=False).bind(reactor, proto, "127.0.0.1")
        self.addCleanup(proto.stop)
        self.assertIsNone(proto.multiplexer)
        self.assertIn(proto.ports[0], reactor.getReaders())
        sender = self.receiver()
        proto.configure(remote=sender.getsockname(), codec=CODECS["PCMA"], payload_type=8)
        session = Recorder(FakeDialog())
        proto.start(session)
        sender.sendto(audio_packet(1), ("127.0.0.1", proto.local_port))
        for _ in range(100):
            if session.audio:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(len(session.audio), 1)

    async def test_many_sockets_ready_at_once(self) -> None:
        """One reactor wakeup with several ready sockets delivers to every call."""
        allocator = PortAllocator((48400, 48500))
        sessions = []
        sender = self.receiver()
        for _ in range(5):
            proto = RealtimeTransportProtocol(reactor=reactor, pacer=Pacer(task.Clock()))
            allocator.bind(reactor, proto, "127.0.0.1")
            self.addCleanup(proto.stop)
            proto.configure(remote=sender.getsockname(), codec=CODECS["PCMA"], payload_type=8)
            session = Recorder(FakeDialog())
            proto.start(session)
            sessions.append(session)
            for seq in (1, 2):
                sender.sendto(audio_packet(seq), ("127.0.0.1", proto.local_port))
        for _ in range(100):
            if all(len(s.audio) == 2 for s in sessions):
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual([len(s.audio) for s in sessions], [2] * 5)

    def real_sender(self, remote: tuple[str, int], **config: object):
        """A protocol on a real loopback socket, sending one queued frame per pacer tick."""
        clock = task.Clock()
        proto = RealtimeTransportProtocol(reactor=reactor, pacer=Pacer(clock))
        PortAllocator((47000, 47100)).bind(reactor, proto, "127.0.0.1")
        self.addCleanup(proto.stop)
        proto.configure(remote=remote, codec=CODECS["PCMA"], payload_type=8, **config)
        session = Recorder(FakeDialog())
        session.attach(proto, reactor)
        proto.start(session)
        return proto, clock, session

    def receiver(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2)
        return sock

    def test_socket_send_path(self) -> None:
        """RFC 3550 §5.1: packets written straight to the socket carry the right header,
        consecutive sequence numbers and timestamps, and the G.711 payload of each frame."""
        sink = self.receiver()
        proto, clock, session = self.real_sender(sink.getsockname())
        audio = frames(3)
        session.send_audio(audio)
        for _ in range(3):
            clock.advance(0.02)
        packets = [RTPPacket.parse(sink.recv(2048)) for _ in range(3)]
        self.assertEqual([p.payload for p in packets],
                         [alaw_encode(audio[i * 160 : (i + 1) * 160]) for i in range(3)])
        self.assertEqual([p.marker for p in packets], [True, False, False])
        self.assertEqual({p.ssrc for p in packets}, {proto.ssrc})
        seqs = [p.sequence for p in packets]
        self.assertEqual([(s - seqs[0]) & 0xFFFF for s in seqs], [0, 1, 2])
        self.assertEqual([(p.timestamp - packets[0].timestamp) & 0xFFFFFFFF for p in packets],
                         [0, 160, 320])
        self.assertEqual(proto.stats.packets_sent, 3)
        self.assertEqual(proto.stats.octets_sent, 480)

    def test_socket_send_path_ptime_40(self) -> None:
        """a=ptime:40 on the socket path: one packet of 320 samples per two ticks."""
        sink = self.receiver()
        _proto, clock, session = self.real_sender(sink.getsockname(), ptime=40)
        audio = frames(2)
        session.send_audio(audio)
        clock.advance(0.02)
        clock.advance(0.02)
        packet = RTPPacket.parse(sink.recv(2048))
        self.assertEqual(packet.payload, alaw_encode(audio))

    def test_hostname_remote_not_resolved(self) -> None:
        """The hot path never resolves names: a non-literal remote goes through Twisted's
        write, which refuses it; nothing is sent and nothing raises."""
        sink = self.receiver()
        proto, clock, session = self.real_sender(("localhost", sink.getsockname()[1]))
        session.send_audio(frames(1))
        clock.advance(0.02)
        self.assertEqual(proto.stats.packets_sent, 0)
        sink.settimeout(0.2)
        with self.assertRaises(OSError):
            sink.recv(2048)

    async def test_loopback_packet(self) -> None:
        """Real datagrams over loopback reach the session through the socket; with no SDP
        address (remote None) the sender is latched after the probation run."""
        allocator = PortAllocator((46000, 46100))
        proto = RealtimeTransportProtocol(reactor=reactor, pacer=Pacer(task.Clock()))
        allocator.bind(reactor, proto, "127.0.0.1")
        self.addCleanup(proto.stop)
        proto.configure(remote=None, codec=CODECS["PCMA"], payload_type=8)
        session = Recorder(FakeDialog())
        proto.start(session)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sender.close)
        sender.bind(("127.0.0.1", 0))
        for seq in range(1, PROBATION + 1):
            sender.sendto(audio_packet(seq), ("127.0.0.1", proto.local_port))
        for _ in range(100):
            if session.audio:
                break
            await task.deferLater(reactor, 0.01, lambda: None)
        self.assertEqual(len(session.audio), 1)
        self.assertEqual(proto.remote, sender.getsockname())


class HeaderTests(unittest.SynchronousTestCase):
    def test_version_two(self) -> None:
        _, clock, rtp, _, session = make()
        session.send_audio(frames(1))
        clock.advance(0.02)
        (b0,) = struct.unpack_from("!B", rtp.sent[0][0])
        self.assertEqual(b0 >> 6, 2)
