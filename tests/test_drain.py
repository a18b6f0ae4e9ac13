"""Health probes and graceful drain (issue 15): OPTIONS 200/503, drain() and --drain-timeout.

Runs on ``MemoryReactorClock``: the drain timeout is advanced, never waited for.
"""

from __future__ import annotations

import gc
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import ISystemHandle
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import classImplements

from voiptwisted.service import RETRY_AFTER, STOP_TIMEOUT
from voiptwisted.sip.message import Request, Response

from .test_service import FakeMedia, ServiceTestCase, ack_for, invite, written


def options(branch: str = "z9hG4bKopt1") -> bytes:
    return (
        "OPTIONS sip:echo@127.0.0.1:5061;transport=tls SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS 127.0.0.1:5099;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:probe@example.com>;tag=probetag\r\n"
        "To: <sip:echo@127.0.0.1>\r\n"
        f"Call-ID: {branch}@probe\r\n"
        "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def answers(transport: Any) -> list[Response]:
    return [m for m in written(transport) if isinstance(m, Response)]


def caller_bye(protocol: Any, transport: Any, call_id: str) -> None:
    """The caller hangs up *call_id* (its To tag taken from our 200)."""
    (to,) = [d for d in protocol.dialogs if d.call_id == call_id]
    protocol.dataReceived((
        "BYE sip:echo@127.0.0.1:5061;transport=tls SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS 127.0.0.1:5099;branch=z9hG4bKbye{call_id};rport\r\n"
        "Max-Forwards: 70\r\n"
        "From: <sip:alice@example.com>;tag=alicetag\r\n"
        f"To: <sip:echo@127.0.0.1>;tag={to.local_tag}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    ).encode())


def drain_timers(reactor: Any) -> list[Any]:
    """The drain's timeout still pending on *reactor* (it must be cancelled once done)."""
    return [call for call in reactor.getDelayedCalls() if "_drain_timed_out" in repr(call)]


class HealthTests(ServiceTestCase):
    def test_options_200_while_taking_calls(self) -> None:
        """RFC 3261 §11.2: OPTIONS outside a dialog is answered 200 with our capabilities."""
        service = self.service()
        service.startService()
        protocol, transport = self.connect_caller(service)
        protocol.dataReceived(options())
        (ok,) = answers(transport)
        self.assertEqual(ok.status_code, 200)
        self.assertIn("INVITE", ok.headers["Allow"])

    def test_options_503_with_retry_after_at_max_calls(self) -> None:
        """A dispatcher's probe sees 503 + Retry-After (RFC 3261 §21.5.4) once max_calls are
        up over all flows; a new INVITE still gets 486 as before; 200 again when one ends."""
        service = self.service(max_calls=1)
        service.startService()
        first = self.answered_call(service)
        gc.collect()
        prober, transport = self.connect_caller(service)
        prober.dataReceived(options())
        (busy,) = answers(transport)
        self.assertEqual((busy.status_code, busy.headers["Retry-After"]),
                         (503, str(RETRY_AFTER)))
        prober.dataReceived(invite("second@test", "z9hG4bKsecond"))
        self.assertIn(486, [m.status_code for m in answers(transport)])
        caller_bye(first[0], first[1], "call-0@test")
        prober.dataReceived(options("z9hG4bKopt2"))
        self.assertEqual([m.status_code for m in answers(transport)], [200])

    def test_options_inside_a_dialog_is_not_a_probe(self) -> None:
        """Only out-of-dialog OPTIONS is the health answer; the admission hook never sees
        in-dialog requests (they belong to calls we keep)."""
        service = self.service()
        service.startService()
        protocol, transport = self.answered_call(service)
        service.drain(timeout=30)
        protocol.dataReceived(options().replace(
            b"To: <sip:echo@127.0.0.1>", b"To: <sip:echo@127.0.0.1>;tag=unknown"))
        self.assertEqual([m.status_code for m in answers(transport)], [481])


class DrainTests(ServiceTestCase):
    def test_drain_refuses_new_calls_503_and_keeps_active_ones(self) -> None:
        """While draining: OPTIONS and new INVITEs get 503 + Retry-After; the call that is up
        continues; drain() fires when it ends, with no BYE from us."""
        service = self.service()
        service.startService()
        protocol, transport = self.answered_call(service)
        d = service.drain(timeout=30)
        self.assertNoResult(d)
        protocol.dataReceived(options())
        protocol.dataReceived(invite("late@test", "z9hG4bKlate"))
        refused = answers(transport)
        self.assertEqual([m.status_code for m in refused if m.status_code != 100], [503, 503])
        self.assertTrue(all(m.headers["Retry-After"] == str(RETRY_AFTER)
                            for m in refused if m.status_code == 503))
        self.reactor.advance(29)
        self.assertNoResult(d)
        self.assertEqual(service.active_call_count(), 1)
        self.assertTrue(drain_timers(self.reactor))
        caller_bye(protocol, transport, "call-0@test")
        self.successResultOf(d)
        sent = written(transport)
        self.assertFalse([m for m in sent if isinstance(m, Request) and m.method == "BYE"])
        self.assertFalse(drain_timers(self.reactor))

    def test_drain_timeout_then_stop_byes(self) -> None:
        """drain() gives up after its timeout; stopService then BYEs what is still up."""
        service = self.service(drain_timeout=30)
        service.startService()
        protocol, transport = self.answered_call(service, n=2)
        d = service.stopService()
        self.reactor.advance(29.5)
        self.assertNoResult(d)
        self.assertFalse([m for m in written(transport)
                          if isinstance(m, Request) and m.method == "BYE"])
        self.reactor.advance(1)
        byes = [m for m in written(transport) if isinstance(m, Request) and m.method == "BYE"]
        self.assertEqual(len(byes), 2)
        for bye in byes:
            protocol.dataReceived(bytes(Response.from_request(bye, 200)))
        self.successResultOf(d)
        self.assertTrue(transport.disconnecting)

    def test_stop_with_drain_timeout_waits_for_the_last_call(self) -> None:
        """SIGTERM with --drain-timeout: stopService finishes as soon as the last call ends
        (each call ending separately), long before the timeout."""
        service = self.service(drain_timeout=30)
        service.startService()
        protocol, transport = self.answered_call(service, n=2)
        d = service.stopService()
        self.reactor.advance(1)
        caller_bye(protocol, transport, "call-0@test")
        self.assertNoResult(d)
        self.reactor.advance(1)
        caller_bye(protocol, transport, "call-1@test")
        self.successResultOf(d)
        self.assertTrue(transport.disconnecting)
        self.assertFalse(drain_timers(self.reactor))

    def test_default_drain_timeout_is_todays_stop(self) -> None:
        """drain_timeout 0 (the default): stopService BYEs at once, as before issue 15."""
        service = self.service()
        service.startService()
        _protocol, transport = self.answered_call(service)
        d = service.stopService()
        self.assertEqual(
            [m.method for m in written(transport) if isinstance(m, Request)], ["BYE"])
        self.reactor.advance(STOP_TIMEOUT)
        self.successResultOf(d)

    def test_drain_without_calls_fires_at_once_and_again(self) -> None:
        service = self.service()
        service.startService()
        self.successResultOf(service.drain(timeout=30))
        self.successResultOf(service.drain())
        self.assertTrue(service.draining)

    def test_negative_drain_timeout_refused(self) -> None:
        with self.assertRaises(ValueError):
            self.service(drain_timeout=-1)


class DrainOptionTests(ServiceTestCase):
    def test_drain_timeout_option(self) -> None:
        """``twistd voip --drain-timeout 30`` reaches the config; default 0; bad values refused."""
        from twisted.python import usage

        from voiptwisted.tap import Options

        options = Options()
        options.parseOptions(["--state-dir", str(self.state), "--drain-timeout", "30"])
        self.assertEqual(options.config.drain_timeout, 30.0)
        options = Options()
        options.parseOptions(["--state-dir", str(self.state)])
        self.assertEqual(options.config.drain_timeout, 0.0)
        for bad in ("-1", "soon"):
            with self.assertRaises(usage.UsageError):
                Options().parseOptions(["--drain-timeout", bad])


class SocketTransport(StringTransport):
    """A StringTransport standing for a socket: loseConnection ends the connection only
    when the reactor next runs (after its buffer is flushed), as TCP does."""

    def __init__(self, reactor: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reactor = reactor

    def getHandle(self) -> None:
        return None

    def loseConnection(self) -> None:
        if not self.disconnecting:
            super().loseConnection()
            self.reactor.callLater(0.01, self.protocol.connectionLost, Failure(ConnectionDone()))


classImplements(SocketTransport, ISystemHandle)


class FlushTests(ServiceTestCase):
    def test_stop_waits_for_socket_flows_to_close(self) -> None:
        """The drain's last call ends with a BYE we answer: stopService fires only once that
        flow has closed, so the reactor's shutdown cannot drop the buffered 200 (a bug
        found behind Kamailio: the last BYE of a drain timed out with 408)."""
        service = self.service(drain_timeout=30)
        service.startService()
        protocol = service.listener.factory.buildProtocol(None)
        protocol.media_class = FakeMedia
        transport = SocketTransport(
            self.reactor,
            hostAddress=IPv4Address("TCP", "127.0.0.1", 5061),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 5099),
        )
        protocol.makeConnection(transport)
        transport.protocol = protocol
        protocol.dataReceived(invite("call-0@test", "z9hG4bKinv0"))
        ok = [m for m in written(transport) if getattr(m, "status_code", 0) == 200][-1]
        protocol.dataReceived(ack_for(ok))
        d = service.stopService()
        caller_bye(protocol, transport, "call-0@test")
        self.assertTrue(transport.disconnecting)
        self.assertNoResult(d)
        self.reactor.advance(0.01)
        self.successResultOf(d)
