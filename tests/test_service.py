"""``VoIPService`` in memory: listeners, stopping, max-calls, place_call and --dial.

Real ``SessionInitiationProtocol`` objects on ``StringTransport`` with a fake CallMedia
(``protocol.media_class``) stand in for the network; ``MemoryReactorClock`` records
listeners and drives every timer, so nothing here opens a socket or waits.
"""

from __future__ import annotations

import gc
import pathlib
import shutil
import tempfile
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.apps import EchoDialog
from voiptwisted.service import (
    EMBEDDED_PORT,
    STOP_TIMEOUT,
    ListenFailed,
    ServiceConfig,
    VoIPService,
    baresip_command,
    listen_description,
)
from voiptwisted.sip.dialog import CallFailed, Dialog, DialogState
from voiptwisted.sip.framing import PING, PONG, StreamFramer
from voiptwisted.sip.message import Message, Request, Response
from voiptwisted.sip.uri import SipURI

OFFER = (
    b"v=0\r\no=alice 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n"
)


class FakeMedia:
    """The CallMedia contract without sockets."""

    def __init__(self) -> None:
        self.local_sdp = OFFER.replace(b"alice", b"us")
        self.session: Any = None
        self.stopped = False

    @classmethod
    def answer_offer(cls, config: Any, offer: bytes, host: str) -> FakeMedia:
        return cls()

    @classmethod
    def create_offer(cls, config: Any, host: str, *, secure: bool | None = None) -> FakeMedia:
        return cls()

    def accept_answer(self, answer: bytes) -> None:
        pass

    def start(self, session: Any) -> None:
        self.session = session
        session.start()

    def stop(self) -> None:
        if not self.stopped and self.session is not None:
            self.session.stop()
        self.stopped = True


def invite(call_id: str, branch: str) -> bytes:
    return (
        "INVITE sip:echo@127.0.0.1:5061;transport=tls SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS 127.0.0.1:5099;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=alicetag\r\n"
        "To: <sip:echo@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 INVITE\r\n"
        "Contact: <sip:alice@127.0.0.1:5099;transport=tls>\r\n"
        "Content-Type: application/sdp\r\n"
        f"Content-Length: {len(OFFER)}\r\n\r\n"
    ).encode() + OFFER


def ack_for(ok: Any) -> bytes:
    return (
        "ACK sip:alice@127.0.0.1:5099;transport=tls SIP/2.0\r\n"
        "Via: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bKack1;rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=alicetag\r\n"
        f"To: {ok.headers['To']}\r\n"
        f"Call-ID: {ok.call_id}\r\n"
        "CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def written(transport: StringTransport) -> list[Any]:
    data = transport.value()
    transport.clear()
    return [Message.parse(f) for f in StreamFramer().feed(data) if f not in (PING, PONG)]


class ServiceTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.state = pathlib.Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.state, True)
        self.reactor = MemoryReactorClock()

    def service(self, **kwargs: Any) -> VoIPService:
        kwargs.setdefault("state_dir", self.state)
        service = VoIPService(ServiceConfig(**kwargs), reactor=self.reactor)
        return service

    def connect_caller(self, service: VoIPService) -> tuple[Any, StringTransport]:
        """A direct caller's flow on the service's listener (as the reactor would build it)."""
        assert service.listener is not None
        protocol = service.listener.factory.buildProtocol(None)
        protocol.media_class = FakeMedia
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 5061),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 5099),
        )
        protocol.makeConnection(transport)
        return protocol, transport

    def answered_call(self, service: VoIPService, n: int = 1) -> tuple[Any, StringTransport]:
        protocol, transport = self.connect_caller(service)
        for i in range(n):
            protocol.dataReceived(invite(f"call-{i}@test", f"z9hG4bKinv{i}"))
            ok = [m for m in written(transport) if getattr(m, "status_code", 0) == 200][-1]
            protocol.dataReceived(ack_for(ok))
        return protocol, transport


class ListenerTests(ServiceTestCase):
    def test_embedded_default_listens_on_loopback_5061_with_certificate(self) -> None:
        """Issue 6 item 2: no AOR, no --listen: TLS on 127.0.0.1:5061 with the state dir's cert."""
        service = self.service()
        with capturedLogs() as events:
            service.startService()
        [(port, factory, context, _backlog, interface)] = self.reactor.sslServers
        self.assertEqual((port, interface), (EMBEDDED_PORT, "127.0.0.1"))
        pem = self.state / "embedded-tls.pem"
        self.assertEqual(pem.stat().st_mode & 0o777, 0o600)
        self.assertIsNotNone(context.getContext())
        self.assertIs(factory, service.listener.factory)
        text = " ".join(str(e.get("uri", "")) + str(e.get("command", "")) for e in events)
        self.assertIn("sip:echo@127.0.0.1:5061;transport=tls", text)
        self.assertIn("baresip -e", text)
        self.assertIsNone(service.client)

    def test_certificate_created_once(self) -> None:
        self.service().privilegedStartService()
        first = (self.state / "embedded-tls.pem").read_bytes()
        self.service().privilegedStartService()
        self.assertEqual((self.state / "embedded-tls.pem").read_bytes(), first)

    def test_listen_tls_gets_embedded_certificate(self) -> None:
        """--listen tls:PORT without privateKey= uses the self-signed certificate."""
        service = self.service(listen="tls:5071:interface=127.0.0.1")
        service.startService()
        [(port, _f, _ctx, _b, interface)] = self.reactor.sslServers
        self.assertEqual((port, interface), (5071, "127.0.0.1"))
        self.assertEqual(service.call_uri(), "sip:echo@127.0.0.1:5071;transport=tls")

    def test_listen_tcp(self) -> None:
        service = self.service(listen="tcp:5060:interface=127.0.0.1")
        service.startService()
        self.assertEqual(self.reactor.tcpServers[0][0], 5060)
        self.assertEqual(self.reactor.sslServers, [])
        self.assertFalse((self.state / "embedded-tls.pem").exists())

    def test_udp_aor_flow_takes_the_service_protocol_arguments(self) -> None:
        """A ``;transport=udp`` AOR's flow is built with the arguments every flow gets
        (``limits`` included): the datagram adapter refused ``limits`` with TypeError, so
        ``twistd voip --aor 'sip:...;transport=udp'`` never registered."""
        from voiptwisted.sip.datagram import SIPDatagramProtocol

        service = self.service(
            aor=SipURI.parse("sip:alice@127.0.0.1:5060;transport=udp"), password="pw"
        )
        protocol = service.client._build()
        self.assertIsInstance(protocol, SIPDatagramProtocol)
        self.assertIs(protocol.core.media_config, service.media_config)

    def test_listen_udp_answers_calls(self) -> None:
        """--listen udp:PORT:interface=... binds SIP over UDP (RFC 3261 §18) with
        reactor.listenUDP, reading datagrams up to 65,535 octets; a call to it is answered
        over UDP, the 200 going back to the caller's source address (RFC 3581)."""
        from tests.sip.test_datagram import FakeDatagramTransport
        from voiptwisted.sip.datagram import READ_SIZE, SIPDatagramProtocol

        bound: list[tuple[int, Any, str, int]] = []

        def listenUDP(port: int, protocol: Any, interface: str = "", maxPacketSize: int = 8192
                      ) -> Any:
            bound.append((port, protocol, interface, maxPacketSize))
            return FakeDatagramTransport()

        self.reactor.listenUDP = listenUDP  # type: ignore[attr-defined]
        service = self.service(listen="udp:5060:interface=127.0.0.1")
        service.startService()
        [(port, protocol, interface, size)] = bound
        self.assertEqual((port, interface, size), (5060, "127.0.0.1", READ_SIZE))
        self.assertIsInstance(protocol, SIPDatagramProtocol)
        self.assertEqual(service.call_uri(), "sip:echo@127.0.0.1:5060;transport=udp")
        protocol.core.media_class = FakeMedia
        transport = FakeDatagramTransport("127.0.0.1", 5060)
        protocol.makeConnection(transport)
        data = invite("udp-call@test", "z9hG4bKudp1").replace(b"SIP/2.0/TLS", b"SIP/2.0/UDP")
        protocol.datagramReceived(data, ("127.0.0.1", 5099))
        answers = [(Message.parse(d), addr) for d, addr in transport.written]
        self.assertEqual([m.status_code for m, _ in answers][-1], 200)
        self.assertEqual({addr for _, addr in answers}, {("127.0.0.1", 5099)})
        self.assertEqual(service.active_call_count(), 1)

    def test_listen_description(self) -> None:
        pem = pathlib.Path("/x:y/key.pem")
        self.assertEqual(listen_description("tcp:5060", lambda: pem), "tcp:5060")
        self.assertEqual(
            listen_description("tls:5061", lambda: pem),
            r"ssl:5061:privateKey=/x\:y/key.pem:certKey=/x\:y/key.pem",
        )
        given = "ssl:5061:privateKey=a.pem"
        self.assertEqual(listen_description(given, lambda: self.fail("no cert needed")), given)

    def busy_reactor(self) -> MemoryReactorClock:
        class Busy(MemoryReactorClock):
            def listenSSL(self, port: int, *args: Any, **kwargs: Any) -> Any:
                raise CannotListenError("127.0.0.1", port, OSError(98, "Address already in use"))

        reactor = Busy()
        reactor.running = True
        return reactor

    def test_listen_failure_fails_start_without_stopping_the_host(self) -> None:
        """Issue 13: port in use: one error line naming the address and why, no "answering
        calls" line, when_listening fails with ListenFailed, when_finished fires with 1;
        the reactor is not stopped and the host's other service keeps running."""
        from twisted.application.service import MultiService, Service

        self.reactor = self.busy_reactor()
        host = MultiService()
        other = Service()
        other.setServiceParent(host)
        service = self.service()
        service.setServiceParent(host)
        with capturedLogs() as events:
            host.privilegedStartService()
            host.startService()
        errors = [e for e in events if e.get("log_level").name == "error"]
        self.assertEqual(len(errors), 1)
        line = errors[0]["error"]
        self.assertEqual(
            line, "cannot listen on ssl:5061:interface=127.0.0.1: Address already in use"
        )
        self.assertFalse(any("answering calls" in e.get("log_format", "") for e in events))
        failure = self.failureResultOf(service.when_listening(), ListenFailed)
        self.assertEqual(str(failure.value), line)
        self.assertEqual(self.successResultOf(service.when_finished()), 1)
        self.assertIs(service.start_failure, failure.value)
        self.assertFalse(self.reactor.hasStopped)
        self.assertTrue(self.reactor.running)
        self.assertTrue(other.running)
        self.successResultOf(host.stopService())

    def test_listen_failure_registration_never_starts(self) -> None:
        """A failed start starts nothing else: no connection to the registrar is tried."""
        self.reactor = self.busy_reactor()
        service = self.service(
            aor=SipURI.parse("sip:alice@127.0.0.1:5061"), listen="tls:5071:interface=127.0.0.1"
        )
        service.startService()
        self.failureResultOf(service.when_listening(), ListenFailed)
        self.assertFalse(service.client.running)
        self.assertEqual(self.reactor.tcpClients, [])
        self.successResultOf(service.stopService())

    def test_every_listener_bound_one_failure_closes_the_others(self) -> None:
        """--listen repeated: each binds; when one cannot, the ones that did are closed."""

        class HalfBusy(MemoryReactorClock):
            def listenTCP(self, port: int, *args: Any, **kwargs: Any) -> Any:
                if port == 5062:
                    raise CannotListenError("127.0.0.1", port, OSError(98, "in use"))
                return super().listenTCP(port, *args, **kwargs)

        service = self.service(listen=["tcp:5060:interface=127.0.0.1", "tcp:5064"])
        service.startService()
        ports = self.successResultOf(service.when_listening())
        self.assertEqual([p[0] for p in self.reactor.tcpServers], [5060, 5064])
        self.assertEqual(len(ports), 2)
        self.assertEqual(service.call_uri(), "sip:echo@127.0.0.1:5060;transport=tcp")

        self.reactor = HalfBusy()
        service = self.service(listen=("tcp:5060", "tcp:5062"))
        with capturedLogs() as events:
            service.startService()
        [error] = [e for e in events if e.get("log_level").name == "error"]
        self.assertIn("tcp:5062", error["error"])
        self.assertEqual(len(self.reactor.tcpServers), 1)
        self.assertFalse(service.listeners[0].running)
        self.assertIsNone(service.listeners[0].port)

    def test_bad_description_when_embedding(self) -> None:
        """A description twistd would refuse as a usage error fails start when embedding."""
        service = self.service(listen="bogus:1")
        with capturedLogs():
            service.startService()
        failure = self.failureResultOf(service.when_listening(), ListenFailed)
        self.assertIn("bogus:1", str(failure.value))
        self.assertIn("bad listen description", str(failure.value))

    def test_nothing_written_before_start(self) -> None:
        """Issue 13: constructing writes nothing in state_dir; start writes the instance id
        the registration uses and the embedded certificate."""
        from voiptwisted.sip.connect import INSTANCE_ID_FILE

        state = self.state / "fresh"
        service = self.service(state_dir=state)
        aor_service = self.service(state_dir=state, aor=SipURI.parse("sip:alice@127.0.0.1"),
                                   listen="tls:5071")  # fmt: skip
        self.assertFalse(state.exists())
        service.privilegedStartService()
        self.assertTrue((state / "embedded-tls.pem").exists())
        aor_service.startService()
        self.assertEqual(
            (state / INSTANCE_ID_FILE).read_text().strip(),
            aor_service.client.registration.instance_id,
        )
        again = self.service(state_dir=state, aor=SipURI.parse("sip:alice@127.0.0.1"))
        self.assertEqual(
            again.client.registration.instance_id, aor_service.client.registration.instance_id
        )
        again.startService()
        self.assertEqual(
            (state / INSTANCE_ID_FILE).read_text().strip(), again.client.registration.instance_id
        )

    def test_baresip_command(self) -> None:
        command = baresip_command("sip:echo@127.0.0.1:5061;transport=tls")
        self.assertTrue(command.startswith("baresip "))
        self.assertIn('/dial sip:echo@127.0.0.1:5061;transport=tls"', command)
        self.assertIn("regint=0", command)


class StopTests(ServiceTestCase):
    def test_stop_sends_bye_for_every_call_and_closes_flows(self) -> None:
        """Issue 6 item 4: stopService BYEs each active call (RFC 3261 §15.1.1), closes flows."""
        service = self.service()
        service.startService()
        protocol, transport = self.answered_call(service, n=2)
        self.assertEqual(service.active_call_count(), 2)
        d = service.stopService()
        byes = [m for m in written(transport) if isinstance(m, Request) and m.method == "BYE"]
        self.assertEqual(sorted(m.call_id for m in byes), ["call-0@test", "call-1@test"])
        for bye in byes:
            protocol.dataReceived(bytes(Response.from_request(bye, 200)))
        self.successResultOf(d)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(protocol.dialog_count, 0)

    def test_stop_is_bounded_when_bye_is_never_answered(self) -> None:
        """A peer that never answers the BYE does not hold the shutdown past STOP_TIMEOUT."""
        service = self.service()
        service.startService()
        _protocol, transport = self.answered_call(service)
        d = service.stopService()
        self.assertNoResult(d)
        self.reactor.advance(STOP_TIMEOUT / 2 + 0.01)
        self.successResultOf(d)
        self.assertTrue(transport.disconnecting)

    def test_stop_rejects_ringing_call(self) -> None:
        """A call still ringing gets a final 480 instead of a BYE."""

        class Ringing(Dialog):
            def call_received(self) -> None:
                self.ringing()

        service = self.service(dialog_class=Ringing)
        service.startService()
        protocol, transport = self.connect_caller(service)
        protocol.dataReceived(invite("ring@test", "z9hG4bKring"))
        written(transport)
        self.successResultOf(service.stopService())
        codes = [m.status_code for m in written(transport) if hasattr(m, "status_code")]
        self.assertIn(480, codes)


class CallLogTests(ServiceTestCase):
    def call_logs(self, **kwargs: Any) -> list[str]:
        """The formatted log lines of one answered call the caller hangs up after 12 s."""
        from twisted.logger import formatEvent

        service = self.service(**kwargs)
        service.startService()
        with capturedLogs() as events:
            protocol, transport = self.connect_caller(service)
            protocol.dataReceived(invite("logged@test", "z9hG4bKlog"))
            ok = [m for m in written(transport) if getattr(m, "status_code", 0) == 200][-1]
            protocol.dataReceived(ack_for(ok))
            self.reactor.advance(12)
            bye = ack_for(ok).replace(b"ACK sip", b"BYE sip").replace(b"1 ACK", b"2 BYE")
            protocol.dataReceived(bye.replace(b"z9hG4bKack1", b"z9hG4bKbye1"))
            self.assertIn(200, [m.status_code for m in written(transport)])
        return [formatEvent(e) for e in events]

    def test_one_call_is_three_masked_lines(self) -> None:
        """Issue 13: caller masked (CallerID repr) in info lines; a call is "from",
        "answered" and "ended" with its duration and who ended it."""
        lines = self.call_logs()
        text = "\n".join(lines)
        self.assertNotIn("alice@example.com", text)
        self.assertIn("call logged@test from *lice@example.com: answering with EchoSession", text)
        self.assertIn("call logged@test answered", text)
        self.assertIn("call logged@test ended after 12.0 s, by the caller", text)
        self.assertEqual(len([line for line in lines if "logged@test" in line]), 3, lines)

    def test_trace_sip_shows_the_full_caller(self) -> None:
        lines = self.call_logs(trace_sip=True)
        self.assertTrue(
            any("from <sip:alice@example.com>;tag=alicetag: answering" in line for line in lines)
        )


class MaxCallsTests(ServiceTestCase):
    def test_max_calls_over_all_flows(self) -> None:
        """--max-calls counts calls over every flow: the second caller's call gets 486."""
        service = self.service(max_calls=1)
        service.startService()
        # The service holds flows weakly (the reactor owns live connections): keep the
        # first flow referenced, and collect, as a full suite run would at random.
        first_flow = self.answered_call(service)
        gc.collect()
        other, transport = self.connect_caller(service)
        other.dataReceived(invite("second@test", "z9hG4bKsecond"))
        codes = [m.status_code for m in written(transport) if hasattr(m, "status_code")]
        self.assertIn(486, codes)
        self.assertNotIn(200, codes)
        self.assertEqual(service.active_call_count(), 1)
        self.assertEqual(first_flow[0].dialog_count, 1)

    def test_wrapped_class_keeps_name(self) -> None:
        service = self.service()
        self.assertEqual(service.inbound_dialog_class.__name__, "EchoDialog")
        self.assertTrue(issubclass(service.inbound_dialog_class, EchoDialog))


class FakeRegistration:
    def __init__(self, protocol: Any) -> None:
        self.protocol = protocol

    def when_registered(self) -> defer.Deferred[Any]:
        return defer.succeed(self.protocol)


class DialingDialog(Dialog):
    """Records dial() and fires (or fails) at once."""

    outcome: Any = None
    dialed: list[tuple[str, type, dict[str, Any]]] = []

    def dial(self, target: str, session_class: type, **kwargs: Any) -> defer.Deferred[Any]:
        type(self).dialed.append((target, session_class, kwargs))
        if isinstance(self.outcome, Exception):
            return defer.fail(self.outcome)
        self.state = DialogState.CONFIRMED
        return defer.succeed(self)


class PlaceCallTests(ServiceTestCase):
    def aor_service(self, **kwargs: Any) -> VoIPService:
        service = self.service(aor=SipURI.parse("sip:alice@127.0.0.1:5061"), **kwargs)
        service.client.registration = FakeRegistration(None)
        return service

    def setUp(self) -> None:
        super().setUp()
        DialingDialog.dialed = []
        DialingDialog.outcome = None

    def test_place_call_uses_the_apps_session(self) -> None:
        """place_call waits for the registration and dials with the app's session class."""

        class Play(DialingDialog):
            session_class = dict
            session_kwargs = {"path": "a.wav"}

        service = self.aor_service(dialog_class=Play)
        dialog = self.successResultOf(service.place_call("sip:bob@127.0.0.1"))
        self.assertIsInstance(dialog, Play)
        self.assertEqual(Play.dialed, [("sip:bob@127.0.0.1", dict, {"path": "a.wav"})])

    def test_no_redirects_option_reaches_the_dialog(self) -> None:
        """``--no-redirects`` (config.follow_redirects False): the dialled dialog does not
        follow 3xx (RFC 3261 §8.1.3.4); the default follows them."""
        service = self.aor_service(dialog_class=DialingDialog, follow_redirects=False)
        dialog = self.successResultOf(service.place_call("sip:bob@127.0.0.1"))
        self.assertFalse(dialog.follow_redirects)
        service = self.aor_service(dialog_class=DialingDialog)
        self.assertTrue(self.successResultOf(service.place_call("sip:b@h")).follow_redirects)

    def failing_over(self, outcomes: list[Any], can_move: bool = True) -> tuple[Any, list]:
        """A service whose dials fail with *outcomes* in turn (then succeed), recording the
        fail_over calls of its client; the registration re-registers at once.  The outcome
        ``"early 503"`` is a 503 after the callee's 18x made an early dialog."""

        class Flaky(DialingDialog):
            def dial(self, target: str, session_class: type, **kwargs: Any) -> Any:
                type(self).outcome = outcomes.pop(0) if outcomes else None
                if self.outcome == "early 503":
                    self.remote_tag = "early"
                    type(self).outcome = CallFailed(503)
                return super().dial(target, session_class, **kwargs)

        moved: list[tuple[Any, Any]] = []

        class Registration(FakeRegistration):
            def connection_lost(self, protocol: Any) -> None:
                pass

        service = self.service(
            aor=SipURI.parse("sip:alice@127.0.0.1:5061"), dialog_class=Flaky
        )
        service.client.registration = Registration("flow")
        service.client.endpoint.target_count = 3

        def fail_over(protocol: Any, retry_after: Any = None) -> bool:
            moved.append((protocol, retry_after))
            return can_move

        service.client.fail_over = fail_over
        return service, moved

    def test_server_failure_moves_the_call_to_the_next_server(self) -> None:
        """RFC 3263 §4.3: a 503 (with its Retry-After) or 408 from our server to the INVITE
        moves the flow to the next server and the call is placed again there."""
        service, moved = self.failing_over(
            [CallFailed(503, retry_after=120), CallFailed(408)]
        )
        dialog = self.successResultOf(service.place_call("sip:bob@127.0.0.1"))
        self.assertEqual(dialog.state, DialogState.CONFIRMED)
        self.assertEqual(moved, [("flow", 120), ("flow", None)])

    def test_far_end_failures_do_not_move(self) -> None:
        """A 486, or a 503 once the callee's early dialog exists, is the callee's answer."""
        service, moved = self.failing_over([CallFailed(486)])
        failure = self.failureResultOf(service.place_call("sip:bob@127.0.0.1"), CallFailed)
        self.assertEqual(failure.value.status_code, 486)
        service, moved = self.failing_over(["early 503"])
        self.failureResultOf(service.place_call("sip:bob@127.0.0.1"), CallFailed)
        self.assertEqual(moved, [])

    def test_moves_bounded_by_the_targets(self) -> None:
        """At most one move per other server: the last 503 fails the call."""
        service, moved = self.failing_over([CallFailed(503)] * 5)
        failure = self.failureResultOf(service.place_call("sip:bob@127.0.0.1"), CallFailed)
        self.assertEqual(failure.value.status_code, 503)
        self.assertEqual(len(moved), 2)

    def test_single_server_fails_the_call(self) -> None:
        service, moved = self.failing_over([CallFailed(503)], can_move=False)
        self.failureResultOf(service.place_call("sip:bob@127.0.0.1"), CallFailed)
        self.assertEqual(len(moved), 1)

    def test_place_call_without_aor_needs_a_running_service(self) -> None:
        self.failureResultOf(self.service().place_call("sip:bob@127.0.0.1"), RuntimeError)

    def test_dial_answered_then_ended_exit_status_0(self) -> None:
        """--dial: when_finished fires with 0 once the answered call ends; the service
        itself leaves the reactor alone (issue 13: only the plugin stops it)."""
        service = self.aor_service(
            dialog_class=DialingDialog, dial=SipURI.parse("sip:bob@127.0.0.1")
        )
        self.reactor.running = True
        finished = service.when_finished()
        service._dial()
        self.assertIsNone(service.exit_status)
        self.assertNoResult(finished)
        self.assertEqual(self.reactor.getDelayedCalls(), [])  # waits on when_ended(), no polling
        service.dialed._end()  # what every ending path (BYE either way, timeout) runs
        self.assertEqual(service.dialed.state, DialogState.TERMINATED)
        self.assertEqual(service.exit_status, 0)
        self.assertEqual(self.successResultOf(finished), 0)
        self.assertEqual(self.successResultOf(service.when_finished()), 0)
        self.assertFalse(self.reactor.hasStopped)

    def test_dial_refused_exit_status_1(self) -> None:
        DialingDialog.outcome = CallFailed(486)
        service = self.aor_service(
            dialog_class=DialingDialog, dial=SipURI.parse("sip:bob@127.0.0.1")
        )
        self.reactor.running = True
        with capturedLogs() as events:
            service._dial()
        self.assertEqual(service.exit_status, 1)
        self.assertEqual(self.successResultOf(service.when_finished()), 1)
        self.assertFalse(self.reactor.hasStopped)
        self.assertTrue(any("486 Busy Here" in str(e.get("why")) for e in events))

    def test_no_verify_tls_warns(self) -> None:
        with capturedLogs() as events:
            self.aor_service(verify_tls=False)
        self.assertTrue(any("verification is OFF" in e.get("log_format", "") for e in events))

    def test_unreachable_registrar_is_one_line(self) -> None:
        """The first failed connection is one warning naming the targets tried and why."""
        from twisted.internet.error import ConnectionRefusedError
        from twisted.python.failure import Failure

        service = self.aor_service()
        service.client.endpoint.tried = ["127.0.0.1:5061"]  # as the endpoint's connect sets it
        with capturedLogs() as events:
            service._first_connection_failed(Failure(ConnectionRefusedError()))
            service._first_connection_failed(Failure(defer.CancelledError()))
        [event] = events
        self.assertEqual(event["targets"], "127.0.0.1:5061")
        self.assertIn("refused", event["why"])

    def test_credentials_config_reaches_registration_and_flows(self) -> None:
        """Issue 14: auth_realms / realm_credentials / allow_legacy_digest make one
        Credentials shared by the registration (which binds the registrar's realm) and
        every flow's dialogs."""
        service = self.service(
            aor=SipURI.parse("sip:alice@127.0.0.1:5061"),
            password="pw",
            auth_realms=("proxy.example",),
            realm_credentials={"carrier": ("acct", "pw2")},
            allow_legacy_digest=True,
        )
        credentials = service.client.registration.credentials
        protocol = service.client.factory.buildProtocol(None)
        self.assertIs(protocol.credentials, credentials)
        self.assertEqual(credentials.realms, {"proxy.example", "carrier"})
        self.assertTrue(credentials.allow_legacy_digest)
        self.assertNotIn("pw2", repr(service.config))
        default = self.service(aor=SipURI.parse("sip:alice@127.0.0.1:5061"), password="pw")
        credentials = default.client.registration.credentials
        self.assertEqual((credentials.realms, credentials.allow_legacy_digest), (set(), False))

    def test_sips_aor_requires_srtp(self) -> None:
        """Issue 14 finding 11: the embedding API's default for a sips: AOR (or dial target)
        is SRTP required, for the service's MediaConfig too; an explicit off/optional
        with a sips: URI is a ValueError, not a silently plain-RTP call."""
        sips = SipURI.parse("sips:alice@127.0.0.1:5061")
        self.assertEqual(ServiceConfig(aor=sips).srtp, "required")
        self.assertEqual(ServiceConfig(aor=SipURI.parse("sip:a@example.com")).srtp, "optional")
        self.assertEqual(ServiceConfig().srtp, "optional")
        service = self.service(aor=sips)
        self.assertEqual(service.media_config.srtp, "required")
        for policy in ("off", "optional"):
            with self.assertRaises(ValueError):
                ServiceConfig(aor=sips, srtp=policy)
            with self.assertRaises(ValueError):
                ServiceConfig(aor=SipURI.parse("sip:a@example.com"),
                              dial=SipURI.parse("sips:b@example.com"), srtp=policy)
        with self.assertRaises(ValueError):
            ServiceConfig(srtp="sometimes")

    def test_rtp_timeouts_reach_media_config(self) -> None:
        """Issue 17 item 2: ServiceConfig.rtp_timeout/rtp_hold_timeout (60 s / off)."""
        media = self.service().media_config
        self.assertEqual((media.rtp_timeout, media.rtp_hold_timeout), (60.0, 0.0))
        media = self.service(rtp_timeout=0, rtp_hold_timeout=600).media_config
        self.assertEqual((media.rtp_timeout, media.rtp_hold_timeout), (0, 600))
        with self.assertRaises(ValueError):
            ServiceConfig(rtp_timeout=-1)

    def test_dns_server_reaches_the_endpoint(self) -> None:
        """ServiceConfig.dns_server: the registrar's DNS SRV (RFC 3263) is asked there."""
        from voiptwisted.sip.locate import ServerLocator

        service = self.aor_service(dns_server=("127.0.0.1", 5353))
        locator = service.client.endpoint.resolver
        self.assertIsInstance(locator, ServerLocator)
        self.assertEqual(locator.dns_resolver.servers, [("127.0.0.1", 5353)])
        default = self.aor_service().client.endpoint
        self.assertIsInstance(default.resolver, ServerLocator)
        self.assertIsNone(default.name_resolver)


class CallBoundsTests(ServiceTestCase):
    """Issue 14 finding 6: a global default call cap and an optional duration limit."""

    def test_default_max_calls_from_rtp_ports_over_all_flows(self) -> None:
        """6 connections x 900 INVITEs took every RTP port and the next INVITE got 500:
        without --max-calls the cap follows the port range and the excess gets 503."""
        service = self.service(rtp_ports=(10000, 10010))
        self.assertEqual(service.max_calls, 3)
        service.startService()
        flows = [self.answered_call(service) for _ in range(3)]
        gc.collect()
        other, transport = self.connect_caller(service)
        other.dataReceived(invite("fourth@test", "z9hG4bKfourth"))
        finals = [m for m in written(transport) if getattr(m, "status_code", 0) >= 200]
        self.assertEqual([m.status_code for m in finals], [503])
        self.assertEqual(finals[0].headers["Retry-After"], "30")
        self.assertEqual(service.active_call_count(), 3)
        self.assertEqual(len(flows), 3)

    def test_derived_cap_is_503_on_one_flow_too(self) -> None:
        service = self.service(rtp_ports=(10000, 10010))
        service.startService()
        protocol, transport = self.answered_call(service, n=3)
        protocol.dataReceived(invite("fourth@test", "z9hG4bKfourth"))
        finals = [m for m in written(transport) if getattr(m, "status_code", 0) >= 200]
        self.assertEqual([m.status_code for m in finals], [503])

    def test_explicit_max_calls_still_486(self) -> None:
        service = self.service(max_calls=5)
        self.assertEqual(service.max_calls, 5)

    def test_max_call_duration_hangs_up_with_bye(self) -> None:
        service = self.service(max_call_duration=60)
        service.startService()
        _flow, transport = self.answered_call(service)
        self.reactor.advance(59)
        self.assertEqual(written(transport), [])
        self.reactor.advance(1)
        self.assertEqual([m.method for m in written(transport)], ["BYE"])

    def test_ended_call_leaves_no_duration_timer(self) -> None:
        service = self.service(max_call_duration=60)
        service.startService()
        protocol, transport = self.answered_call(service)
        deadline = self.reactor.seconds() + 60

        def duration_timers() -> list[Any]:
            return [c for c in self.reactor.getDelayedCalls() if c.getTime() == deadline]

        self.assertEqual(len(duration_timers()), 1)
        [dialog] = protocol.dialogs
        dialog.bye()
        [bye] = written(transport)
        protocol.dataReceived(bytes(Response.from_request(bye, 200)))
        self.assertEqual(dialog.state, DialogState.TERMINATED)
        self.assertEqual(duration_timers(), [])

    def test_listener_gets_connection_limits(self) -> None:
        service = self.service(max_connections=7, idle_timeout=5)
        assert service.listener is not None
        limits = service.listener.factory.limits
        self.assertEqual((limits.max_connections, limits.idle_timeout), (7, 5))

    def test_bad_bounds_refused(self) -> None:
        for bad in ({"max_call_duration": -1}, {"max_connections": 0}, {"max_calls": -1}):
            with self.assertRaises(ValueError):
                ServiceConfig(**bad)

    def test_stop_aborts_flows_stuck_in_tls_handshake(self) -> None:
        """Finding 12: SIGTERM took ~3 min with a sips: flow stuck in its TLS handshake
        (a plain-TCP "registrar"); stopping now aborts such flows at once."""
        from twisted.application.service import Service
        from twisted.internet import interfaces
        from zope.interface import directlyProvides

        from voiptwisted.sip.protocol import SessionInitiationProtocol

        class SlowToStop(Service):
            """Like ClientService waiting for its flow's close, which a handshake holds."""

            def stopService(self) -> defer.Deferred[None]:
                super().stopService()
                return defer.Deferred()

        service = self.service()
        SlowToStop().setServiceParent(service)
        service.startService()
        stuck = SessionInitiationProtocol(aor="sips:alice@example.com", reactor=self.reactor)
        transport = StringTransport()
        directlyProvides(transport, interfaces.ISSLTransport)
        stuck.makeConnection(transport)
        service.protocols.add(stuck)
        service.stopService()
        self.assertTrue(transport.disconnecting)


class ReplacesAcrossFlowsTests(ServiceTestCase):
    def test_invite_with_replaces_on_another_flow(self) -> None:
        """RFC 3891 §3: the call an INVITE with Replaces names is looked up over every flow
        of the service (the transfer target is often reached on a connection of its own):
        the new call on the second flow is answered, the old one gets BYE on its flow."""
        service = self.service()
        service.startService()
        first, first_t = self.answered_call(service)
        [old] = first.dialogs
        second, second_t = self.connect_caller(service)
        replacing = invite("call-new@test", "z9hG4bKnew").replace(
            b"CSeq: 1 INVITE\r\n",
            f"CSeq: 1 INVITE\r\nReplaces: {old.call_id};to-tag={old.local_tag};"
            f"from-tag=alicetag\r\n".encode(),
        )
        second.dataReceived(replacing)
        ok = [m for m in written(second_t) if getattr(m, "status_code", 0) == 200][-1]
        second.dataReceived(ack_for(ok).replace(b"call-0@test", b"call-new@test"))
        [bye] = [m for m in written(first_t) if getattr(m, "method", None) == "BYE"]
        self.assertEqual(bye.call_id, old.call_id)


class DirectCallTests(ServiceTestCase):
    """Issue 13: without an AOR place_call goes straight to the target (connect())."""

    def setUp(self) -> None:
        super().setUp()
        from voiptwisted.sip import connect as connect_module

        self.connects: list[tuple[Any, dict[str, Any], defer.Deferred[Any]]] = []
        self.cancelled: list[Any] = []
        self.real_connect = connect_module.connect

        def fake_connect(target: Any, **kwargs: Any) -> defer.Deferred[Any]:
            attempt: defer.Deferred[Any] = defer.Deferred(lambda _: self.cancelled.append(target))
            self.connects.append((target, kwargs, attempt))
            return attempt

        self.patch(connect_module, "connect", fake_connect)

    def running(self, **kwargs: Any) -> VoIPService:
        service = self.service(listen="tcp:5070", **kwargs)
        service.startService()
        self.assertTrue(service.running)
        return service

    def flow_up(self, n: int = -1) -> tuple[Any, StringTransport]:
        """Complete connect attempt *n* with a real protocol on a StringTransport."""
        from voiptwisted.sip.protocol import SessionInitiationProtocol

        _, kwargs, attempt = self.connects[n]
        kwargs = dict(kwargs)
        for name in ("reactor", "ca_file", "verify", "dns_server"):
            kwargs.pop(name)
        protocol = SessionInitiationProtocol(reactor=self.reactor, **kwargs)
        protocol.media_class = FakeMedia
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 40000),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 5080),
        )
        protocol.makeConnection(transport)
        attempt.callback(protocol)
        return protocol, transport

    def respond(self, protocol: Any, request: Any, code: int, **kwargs: Any) -> None:
        response = Response.from_request(request, code, **kwargs)
        if code > 100:
            response.headers["To"] = f"{request.headers['To']};tag=bobtag"
        protocol.dataReceived(bytes(response))

    def test_call_goes_straight_to_the_target(self) -> None:
        """No registrar: the target's URI is connected to (its host located and, over
        TLS, verified with the service's CA and verify settings) and dialled; before,
        place_call failed with "place_call needs a registered AOR"."""
        service = self.running(ca_file="/ca.pem")
        d = service.place_call("sip:bob@127.0.0.1:5080;transport=tcp")
        [(target, kwargs, _)] = self.connects
        self.assertEqual(str(target), str(SipURI.parse("sip:bob@127.0.0.1:5080;transport=tcp")))
        self.assertEqual((kwargs["ca_file"], kwargs["verify"]), ("/ca.pem", True))
        self.assertIs(kwargs["media_config"], service.media_config)
        protocol, transport = self.flow_up()
        self.assertIn(protocol, service.protocols)
        [invite] = written(transport)
        self.assertEqual(
            (invite.method, invite.uri), ("INVITE", "sip:bob@127.0.0.1:5080;transport=tcp")
        )
        self.respond(protocol, invite, 200, body=OFFER, headers=[
            ("Contact", "<sip:bob@127.0.0.1:5080;transport=tcp>"),
            ("Content-Type", "application/sdp"),
        ])  # fmt: skip
        dialog = self.successResultOf(d)
        self.assertEqual(dialog.state, DialogState.CONFIRMED)
        self.assertEqual([m.method for m in written(transport)], ["ACK"])

    def test_flow_to_the_same_destination_is_reused(self) -> None:
        """A second call to the same destination shares the connection attempt, a third
        one the open flow; another destination gets its own flow."""
        service = self.running()
        service.place_call("sip:bob@127.0.0.1:5080;transport=tcp")
        service.place_call("sip:carol@127.0.0.1:5080;transport=tcp")
        self.assertEqual(len(self.connects), 1)
        protocol, transport = self.flow_up()
        self.assertEqual([m.method for m in written(transport)], ["INVITE", "INVITE"])
        service.place_call("sip:dave@127.0.0.1:5080;transport=tcp")
        self.assertEqual(len(self.connects), 1)
        self.assertEqual(protocol.dialog_count, 3)
        service.place_call("sip:bob@127.0.0.1:5081;transport=tcp")
        self.assertEqual(len(self.connects), 2)

    def test_idle_direct_flow_is_closed(self) -> None:
        from voiptwisted.service import DIRECT_FLOW_IDLE

        service = self.running()
        d = service.place_call("sip:bob@127.0.0.1:5080;transport=tcp")
        protocol, transport = self.flow_up()
        [invite] = written(transport)
        self.reactor.advance(DIRECT_FLOW_IDLE)
        self.assertFalse(transport.disconnecting)  # a call is still on it
        self.respond(protocol, invite, 486)
        self.failureResultOf(d, CallFailed)
        self.reactor.advance(DIRECT_FLOW_IDLE)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(service._direct_flows, {})

    def test_cancel_while_connecting(self) -> None:
        """Cancelling place_call before the flow is up gives up the connection attempt
        (once no other call waits on it) and fails with CancelledError."""
        service = self.running()
        first = service.place_call("sip:bob@127.0.0.1:5080;transport=tcp")
        second = service.place_call("sip:bob@127.0.0.1:5080;transport=tcp")
        [(_, _, attempt)] = self.connects
        first.cancel()
        self.failureResultOf(first, defer.CancelledError)
        self.assertEqual(self.cancelled, [])
        second.cancel()
        self.failureResultOf(second, defer.CancelledError)
        self.assertEqual(len(self.cancelled), 1)
        self.assertTrue(attempt.called)

    def test_cancel_after_ringing_sends_cancel(self) -> None:
        """RFC 3261 §9.1: cancelling place_call once a provisional arrived sends CANCEL
        for the INVITE; the 487 is ACKed and nothing is left."""
        service = self.running()
        d = service.place_call("sip:bob@127.0.0.1:5080;transport=tcp")
        protocol, transport = self.flow_up()
        [invite] = written(transport)
        self.respond(protocol, invite, 180)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        [cancel] = written(transport)
        self.assertEqual((cancel.method, cancel.branch), ("CANCEL", invite.branch))
        self.respond(protocol, cancel, 200)
        self.respond(protocol, invite, 487)
        self.assertEqual([m.method for m in written(transport)], ["ACK"])
        self.assertEqual(protocol.dialog_count, 0)

    def test_dial_without_aor_goes_straight_to_the_target(self) -> None:
        """config.dial without an AOR is placed once the listeners listen, directly."""
        service = self.running(dial=SipURI.parse("sip:bob@127.0.0.1:5080;transport=tcp"))
        [(target, _, _)] = self.connects
        self.assertEqual(target, service.config.dial)
        finished = service.when_finished()
        _, transport = self.flow_up()
        self.assertEqual([m.method for m in written(transport)], ["INVITE"])
        self.assertNoResult(finished)

    def test_udp_target_refused(self) -> None:
        from voiptwisted.sip import connect as connect_module

        self.patch(connect_module, "connect", self.real_connect)
        service = self.running()
        self.failureResultOf(service.place_call("sip:bob@127.0.0.1;transport=udp"), ValueError)

    def test_stop_hangs_up_direct_calls_and_closes_their_flow(self) -> None:
        service = self.running()
        d = service.place_call("sip:bob@127.0.0.1:5080;transport=tcp")
        protocol, transport = self.flow_up()
        [invite] = written(transport)
        self.respond(protocol, invite, 200, body=OFFER, headers=[
            ("Contact", "<sip:bob@127.0.0.1:5080;transport=tcp>"),
            ("Content-Type", "application/sdp"),
        ])  # fmt: skip
        self.successResultOf(d)
        written(transport)
        stopped = service.stopService()
        [bye] = written(transport)
        self.assertEqual(bye.method, "BYE")
        protocol.dataReceived(bytes(Response.from_request(bye, 200)))
        self.successResultOf(stopped)
        self.assertTrue(transport.disconnecting)


class WaitingTests(ServiceTestCase):
    """Issue 13: when_registered() and when_disconnected() for embedding applications."""

    def aor_service(self) -> VoIPService:
        return self.service(aor=SipURI.parse("sip:alice@127.0.0.1:5061;transport=tcp"))

    def test_when_registered(self) -> None:
        """Several waiters fire on the registration; once registered it fires at once;
        a cancelled waiter is forgotten; without an AOR it fails at once."""
        service = self.aor_service()
        registration = service.client.registration
        first, second, dropped = (service.when_registered() for _ in range(3))
        dropped.cancel()
        self.failureResultOf(dropped, defer.CancelledError)
        self.assertEqual(len(registration._waiters), 2)
        protocol = service.client.factory.buildProtocol(None)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 40000),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 5061),
        )
        protocol.makeConnection(transport)
        [register] = written(transport)
        self.assertNoResult(first)
        contact = f"{register.headers['Contact']};expires=3600"
        protocol.dataReceived(
            bytes(Response.from_request(register, 200, headers=[("Contact", contact)]))
        )
        self.assertIs(self.successResultOf(first), protocol)
        self.assertIs(self.successResultOf(second), protocol)
        self.assertIs(self.successResultOf(service.when_registered()), protocol)
        self.failureResultOf(self.service().when_registered(), RuntimeError)

    def test_when_disconnected_fires_when_the_registrars_flow_is_lost(self) -> None:
        from twisted.python.failure import Failure

        from voiptwisted.sip.connect import _ReportingProxy

        service = self.aor_service()
        waiters = [service.when_disconnected() for _ in range(2)]
        dropped = service.when_disconnected()
        dropped.cancel()
        self.failureResultOf(dropped, defer.CancelledError)
        protocol = service.client.factory.buildProtocol(None)
        proxy = _ReportingProxy(protocol, service.client.endpoint)
        proxy.makeConnection(StringTransport())
        for waiter in waiters:
            self.assertNoResult(waiter)
        proxy.connectionLost(Failure(ConnectionError("gone")))
        for waiter in waiters:
            self.assertIsNone(self.successResultOf(waiter))
        self.assertNoResult(service.when_disconnected())

    def test_when_disconnected_fires_once_stopped(self) -> None:
        service = self.service(listen="tcp:5070")
        service.startService()
        waiter = service.when_disconnected()
        self.assertNoResult(waiter)
        self.successResultOf(service.stopService())
        self.successResultOf(waiter)


class RingingDialog(Dialog):
    """Rings and leaves the call unanswered."""

    def call_received(self) -> None:
        self.ringing()


class ReliableProvisionalsTests(ServiceTestCase):
    """``reliable_provisionals`` (``--100rel``) reaches the dialogs of calls we receive."""

    def ringing_for(self, supported: str, **kwargs: Any) -> Any:
        service = self.service(dialog_class=RingingDialog, **kwargs)
        service.startService()
        self.addCleanup(service.stopService)
        protocol, transport = self.connect_caller(service)
        request = invite("rel@test", "z9hG4bKrel").replace(
            b"CSeq: 1 INVITE\r\n", f"CSeq: 1 INVITE\r\nSupported: {supported}\r\n".encode()
        )
        protocol.dataReceived(request)
        return [m for m in written(transport) if getattr(m, "status_code", 0) == 180][-1]

    def test_supported_policy_sends_18x_reliably_to_a_supporting_invite(self) -> None:
        """RFC 3262 §3: "supported": an INVITE that only lists ``100rel`` in Supported
        gets its 180 reliably (Require: 100rel, RSeq)."""
        ringing = self.ringing_for("100rel", reliable_provisionals="supported")
        self.assertIn("100rel", ringing.headers.get("Require", ""))
        self.assertIsNotNone(ringing.headers.get("RSeq"))

    def test_required_policy_and_default_send_it_unreliably(self) -> None:
        """RFC 3262 §3: "required" (and the default, Dialog's own policy) sends 18x
        reliably only when the INVITE requires ``100rel``."""
        for kwargs in ({"reliable_provisionals": "required"}, {}):
            ringing = self.ringing_for("100rel", **kwargs)
            self.assertIsNone(ringing.headers.get("RSeq"))
            self.assertNotIn("100rel", ringing.headers.get("Require", ""))

    def test_required_policy_overrides_the_dialog_class(self) -> None:
        """An explicit policy wins over the class attribute; None keeps the class's."""

        class Eager(RingingDialog):
            reliable_when_supported = True

        self.assertTrue(self.service(dialog_class=Eager).inbound_dialog_class
                        .reliable_when_supported)
        self.assertFalse(self.service(dialog_class=Eager, reliable_provisionals="required")
                         .inbound_dialog_class.reliable_when_supported)

    def test_unknown_policy_refused(self) -> None:
        with self.assertRaises(ValueError):
            self.service(reliable_provisionals="always")
