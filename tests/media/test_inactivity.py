"""Tests for voiptwisted.media.inactivity and the RTP inactivity timeout of CallMedia
(issue 17 item 2): a call whose peer went silent is hung up and its sockets released."""

from __future__ import annotations

from twisted.internet import task
from twisted.internet.protocol import DatagramProtocol
from twisted.trial.unittest import SynchronousTestCase

from tests.media.test_call import FakeDialog, FakeUDPPort
from voiptwisted.media.call import RTP_TIMEOUT, CallMedia, MediaConfig
from voiptwisted.media.inactivity import InactivityTimer
from voiptwisted.media.pacer import Pacer
from voiptwisted.media.session import Session
from voiptwisted.rtp.packet import ReceiverReport, RTPPacket, build_rtcp


class ClosingPort(FakeUDPPort):
    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.closed = False

    def stopListening(self) -> None:
        self.closed = True


class UDPClock(task.Clock):
    """task.Clock with in-memory UDP ports that remember being closed."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[ClosingPort] = []

    def listenUDP(self, port: int, protocol: DatagramProtocol, interface: str = "") -> ClosingPort:
        fake = ClosingPort(port)
        protocol.makeConnection(fake)
        self.ports.append(fake)
        return fake


class Witness(Session):
    """Remembers why and how often it was stopped."""

    def __init__(self, dialog: object, **kwargs: object) -> None:
        super().__init__(dialog, **kwargs)
        self.stops: list[str | None] = []

    def stop(self) -> None:
        self.stops.append(self.stop_reason)


class InactivityTimerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.last = 0.0
        self.limit = 10.0
        self.fired: list[float] = []
        self.timer = InactivityTimer(
            self.clock, lambda: self.last, lambda: self.limit, self.fired.append
        )

    def test_fires_once_after_silence(self) -> None:
        self.timer.start()
        self.clock.advance(9.9)
        self.assertEqual(self.fired, [])
        self.clock.advance(0.1)
        self.assertEqual(self.fired, [10.0])
        self.clock.advance(100)
        self.assertEqual(self.fired, [10.0])
        self.assertFalse(self.timer.armed)

    def test_activity_pushes_deadline(self) -> None:
        self.timer.start()
        self.clock.advance(8)
        self.last = self.clock.seconds()
        self.clock.advance(9)
        self.assertEqual(self.fired, [])
        self.clock.advance(1)
        self.assertEqual(self.fired, [10.0])

    def test_zero_is_off(self) -> None:
        self.limit = 0
        self.timer.start()
        self.assertFalse(self.timer.armed)
        self.clock.advance(1e6)
        self.assertEqual((self.fired, self.clock.getDelayedCalls()), ([], []))

    def test_stop_cancels(self) -> None:
        self.timer.start()
        self.timer.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.timer.reschedule()
        self.clock.advance(100)
        self.assertEqual(self.fired, [])


class CallMediaTimeoutTests(SynchronousTestCase):
    """Alice's offer, Bob's answering CallMedia running a session; Alice goes silent."""

    def setUp(self) -> None:
        self.clock = UDPClock()
        self.setup_call()

    def setup_call(self, **config: object) -> None:
        config.setdefault("codecs", ("PCMA", "PCMU"))  # from_alice sends PCMA (PT 8)
        self.config = MediaConfig(reactor=self.clock, pacer=Pacer(self.clock), srtp="off",
                                  **config)  # type: ignore[arg-type]
        self.alice = CallMedia.create_offer(self.config, "127.0.0.1")
        self.bob = CallMedia.answer_offer(self.config, self.alice.local_sdp, "127.0.0.1")
        self.alice.accept_answer(self.bob.local_sdp)
        self.addCleanup(self.alice.stop)
        self.addCleanup(self.bob.stop)
        self.dialog = FakeDialog()
        self.session = Witness(self.dialog)
        self.bob.start(self.session)
        self.bob_ports = [p for p in self.clock.ports if p.port in (self.bob.local_port,
                                                                     self.bob.local_port + 1)]
        self.alice_address = ("127.0.0.1", self.alice.local_port)

    def from_alice(self, sequence: int) -> None:
        packet = RTPPacket(8, sequence, 160 * sequence, 1234, b"\xd5" * 160).serialize()
        self.bob.rtp.datagramReceived(packet, self.alice_address)

    def test_silence_ends_call_with_bye_and_closes_ports(self) -> None:
        """No RTP or RTCP for rtp_timeout (default 60 s): BYE through the dialog, session
        told why (``stop_reason``), both UDP ports closed."""
        self.from_alice(1)
        self.clock.advance(RTP_TIMEOUT - 1)
        self.assertEqual(self.dialog.byes, 0)
        self.assertFalse(any(port.closed for port in self.bob_ports))
        self.clock.advance(1)
        self.assertEqual(self.dialog.byes, 1)
        self.assertEqual(len(self.bob_ports), 2)
        self.assertTrue(all(port.closed for port in self.bob_ports))
        self.assertEqual(self.session.stops, ["rtp-timeout"])
        self.assertEqual(self.bob.stop_reason, "rtp-timeout")

    def test_packets_reset_the_timer(self) -> None:
        for second in range(1, 200):
            self.clock.advance(1)
            self.from_alice(second)
        self.assertEqual(self.dialog.byes, 0)
        self.clock.advance(RTP_TIMEOUT)
        self.assertEqual(self.dialog.byes, 1)

    def test_rtcp_alone_keeps_call(self) -> None:
        """RTCP is a sign of life too (a peer that sends no RTP, e.g. muted with VAD)."""
        report = build_rtcp(ReceiverReport(1234, []))
        for _ in range(5):
            self.clock.advance(RTP_TIMEOUT / 2)
            self.bob.rtp.rtcp_received(report, self.alice_address)
        self.assertEqual(self.dialog.byes, 0)

    def test_packets_from_other_sources_do_not_keep_call(self) -> None:
        """Only accepted packets count: junk that never passes source validation (here
        out of sequence) does not keep a dead call alive."""
        self.from_alice(1)
        for second in range(1, int(RTP_TIMEOUT) + 1):
            self.clock.advance(1)
            packet = RTPPacket(8, 7 * second, 0, 66, b"\xd5" * 160).serialize()
            self.bob.rtp.datagramReceived(packet, ("203.0.113.66", 6000))
        self.assertEqual(self.dialog.byes, 1)

    def test_zero_turns_it_off(self) -> None:
        self.bob.stop()
        self.setup_call(rtp_timeout=0)
        self.clock.advance(10 * RTP_TIMEOUT)
        self.assertEqual(self.dialog.byes, 0)
        self.assertFalse(self.bob.bounded)

    def hold(self) -> None:
        """Alice puts Bob on hold (sendonly): Bob is recvonly."""
        answer = self.bob.reanswer(self.alice.local_sdp.replace(b"a=sendrecv", b"a=sendonly"))
        self.assertIn(b"a=recvonly", answer)

    def test_hold_uses_hold_timeout_off_by_default(self) -> None:
        self.hold()
        self.clock.advance(100 * RTP_TIMEOUT)
        self.assertEqual(self.dialog.byes, 0)
        self.bob.reanswer(self.alice.local_sdp)
        self.clock.advance(RTP_TIMEOUT)
        self.assertEqual(self.dialog.byes, 1)
        self.assertEqual(self.session.stops, ["rtp-timeout"])

    def test_hold_timeout(self) -> None:
        self.bob.stop()
        self.setup_call(rtp_hold_timeout=600)
        self.hold()
        self.clock.advance(599)
        self.assertEqual(self.dialog.byes, 0)
        self.clock.advance(1)
        self.assertEqual(self.dialog.byes, 1)
        self.assertEqual(self.session.stops, ["hold-timeout"])

    def test_normal_end_reason(self) -> None:
        self.bob.stop()
        self.assertEqual(self.session.stops, ["ended"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_bad_config(self) -> None:
        for bad in ({"rtp_timeout": -1}, {"rtp_hold_timeout": -1}, {"probation": 0}):
            with self.assertRaises(ValueError):
                MediaConfig(**bad)  # type: ignore[arg-type]


class DialogTimeoutTests(SynchronousTestCase):
    """The whole path in memory: a SIP flow answers a call with real CallMedia; the caller's
    RTP stops; after rtp_timeout the UA sends BYE on the flow and every port is closed."""

    def test_vanished_caller_gets_bye_and_ports_close(self) -> None:
        from tests.sip.test_dialog import connect, invite_bytes, respond_to, written
        from voiptwisted.apps import EchoDialog
        from voiptwisted.sip.protocol import SessionInitiationProtocol

        clock = UDPClock()
        config = MediaConfig(reactor=clock, pacer=Pacer(clock), srtp="off")
        caller = CallMedia.create_offer(config, "127.0.0.1")
        self.addCleanup(caller.stop)
        bob = SessionInitiationProtocol(
            aor="sip:bob@example.com", reactor=clock, media_config=config, dialog_class=EchoDialog
        )
        transport = connect(bob)
        bob.dataReceived(invite_bytes(body=caller.local_sdp))
        ok = written(transport)[-1]
        self.assertEqual(ok.status_code, 200)
        bob.dataReceived(invite_bytes(method="ACK", body=b"", to_tag=ok.remote_tag))
        ports = [port for port in clock.ports if port not in clock.ports[:2]]
        self.assertEqual(len(ports), 2)
        clock.advance(RTP_TIMEOUT - 1)
        self.assertEqual(written(transport), [])
        clock.advance(1)
        [bye] = written(transport)
        self.assertEqual(bye.method, "BYE")
        self.assertTrue(all(port.closed for port in ports))
        bob.dataReceived(respond_to(bye, 200, to_tag=None))
        self.assertEqual((bob.dialog_count, bob.pending_timer_count), (0, 0))
