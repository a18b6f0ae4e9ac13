"""Issue 14 finding 5: what a remote party can make a SIP listener hold is bounded.

Each test reproduces an attack in memory (StringTransport, task.Clock): idle and
slow-loris connections, TLS handshakes that never finish, connection floods and
partial bodies.  Before, every one of these connections stayed open forever.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import interfaces, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionAborted
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import directlyProvides

from tests.sip.test_dialog import CONFIG, callee_class, invite_bytes, make_media_class, written
from voiptwisted.sip import limits
from voiptwisted.sip.limits import (
    ConnectionLimits,
    RateLimitedWarning,
    clamp_max_connections,
    default_max_calls,
)
from voiptwisted.sip.protocol import SessionInitiationProtocol, SIPServerFactory

OPTIONS = (
    b"OPTIONS sip:bob@127.0.0.1:5070 SIP/2.0\r\n"
    b"Via: SIP/2.0/TCP 127.0.0.1:5061;branch=z9hG4bKopt1\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
    b"Call-ID: opt@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
)


class Flows(SynchronousTestCase):
    """A listener's factory on a task.Clock and the connections made to it."""

    limits = ConnectionLimits()

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.media = make_media_class()
        self.factory = SIPServerFactory(
            limits=self.limits, aor="sip:bob@example.com", reactor=self.clock,
            media_class=self.media, media_config=CONFIG, dialog_class=callee_class("answer"),
        )
        self.events: list[dict[str, Any]] = []
        self.patch(limits, "log", Logger(observer=self.events.append))

    def connect(self, secure: bool = False) -> tuple[SessionInitiationProtocol, StringTransport]:
        protocol = self.factory.buildProtocol(None)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 5070),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
        )
        if secure:
            directlyProvides(transport, interfaces.ISSLTransport)
        protocol.makeConnection(transport)
        return protocol, transport

    def closed(self, protocol: SessionInitiationProtocol, transport: StringTransport) -> bool:
        """Whether *transport* was closed; if so the protocol is told, as the reactor would."""
        if transport.disconnecting and protocol.transport is not None:
            protocol.connectionLost(Failure(ConnectionAborted()))
        return bool(transport.disconnecting)


class ConnectionCapTests(Flows):
    limits = ConnectionLimits(max_connections=3)

    def test_connections_over_the_cap_are_closed_at_once(self) -> None:
        """4,932 idle TLS connections were held (finding 5): over max_connections a new
        connection is closed as soon as it is accepted, with one warning per interval."""
        flows = [self.connect() for _ in range(3)]
        self.assertFalse(any(self.closed(*flow) for flow in flows))
        refused = [self.connect() for _ in range(50)]
        self.assertTrue(all(self.closed(*flow) for flow in refused))
        self.assertEqual(self.factory.budget.open, 3)
        warnings = [e for e in self.events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.clock.advance(11)
        self.connect()
        warnings = [formatEvent(e) for e in self.events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 2)
        self.assertIn("(50 in the last 10 s)", warnings[1])

    def test_a_closed_connection_frees_its_place(self) -> None:
        flows = [self.connect() for _ in range(3)]
        protocol, transport = flows[0]
        transport.loseConnection()
        self.closed(protocol, transport)
        newcomer = self.connect()
        self.assertFalse(self.closed(*newcomer))
        self.assertEqual(self.factory.budget.open, 3)


class HandshakeTimeoutTests(Flows):
    def test_inbound_tls_handshake_times_out(self) -> None:
        """A TLS connection that never completes its handshake is dropped after 10 s."""
        protocol, transport = self.connect(secure=True)
        self.clock.advance(9.9)
        self.assertFalse(self.closed(protocol, transport))
        self.clock.advance(0.2)
        self.assertTrue(self.closed(protocol, transport))
        self.assertEqual(self.factory.budget.open, 0)

    def test_completed_handshake_stops_the_timer(self) -> None:
        protocol, transport = self.connect(secure=True)
        protocol.handshakeCompleted()
        protocol.dataReceived(OPTIONS)
        self.clock.advance(11)
        self.assertFalse(self.closed(protocol, transport))

    def test_outbound_tls_handshake_times_out(self) -> None:
        """Finding 12: a sips: UA against a plain-TCP "registrar" sat in "TLS handshake"
        forever; our own flows time the handshake out too (and close() aborts it)."""
        protocol = SessionInitiationProtocol(aor="sips:alice@example.com", reactor=self.clock)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 5070),
            peerAddress=IPv4Address("TCP", "127.0.0.1", 5061),
        )
        directlyProvides(transport, interfaces.ISSLTransport)
        protocol.makeConnection(transport)
        self.clock.advance(10.1)
        self.assertTrue(self.closed(protocol, transport))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_outbound_flow_is_never_idle_closed(self) -> None:
        """Our RFC 5626 flow to the registrar is exempt from the inbound timeouts."""
        protocol = SessionInitiationProtocol(aor="sip:alice@example.com", reactor=self.clock)
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(OPTIONS[:30])
        self.clock.advance(3600)
        self.assertFalse(transport.disconnecting)


class InboundTimeoutTests(Flows):
    def test_no_request_closes_after_30_s(self) -> None:
        """An inbound connection that sends nothing (or only CRLF pings) is closed."""
        protocol, transport = self.connect()
        for _ in range(5):
            self.clock.advance(5)
            protocol.dataReceived(b"\r\n\r\n")
        self.clock.advance(5.1)
        self.assertTrue(self.closed(protocol, transport))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_slow_loris_header_closed_after_10_s(self) -> None:
        """A header trickled a byte at a time is dropped 10 s after it began."""
        protocol, transport = self.connect()
        for byte in OPTIONS[:20]:
            protocol.dataReceived(bytes([byte]))
            self.clock.advance(0.5)
        self.assertTrue(self.closed(protocol, transport))

    def test_partial_body_closed_after_10_s(self) -> None:
        """500 connections each holding a partial 1 MiB body: +519 MB that never timed out."""
        protocol, transport = self.connect()
        head = invite_bytes(body=b"x" * 1000)
        protocol.dataReceived(head[:-500])
        self.clock.advance(10.1)
        self.assertTrue(self.closed(protocol, transport))

    def test_complete_messages_keep_a_working_flow(self) -> None:
        protocol, transport = self.connect()
        for _ in range(10):
            protocol.dataReceived(OPTIONS[:50])
            self.clock.advance(5)
            protocol.dataReceived(OPTIONS[50:])
            self.clock.advance(5)
        self.assertFalse(self.closed(protocol, transport))
        self.assertEqual(len(written(transport)), 10)

    def test_idle_flow_closed_but_not_while_a_call_is_up(self) -> None:
        """No call and no transaction for idle_timeout: closed; an answered call keeps it."""
        idle, idle_t = self.connect()
        idle.dataReceived(OPTIONS)
        busy, busy_t = self.connect()
        busy.dataReceived(invite_bytes())
        ok = written(busy_t)[-1]
        busy.dataReceived(invite_bytes(method="ACK", branch="z9hG4bKack", body=b"",
                                       to_tag=ok.remote_tag))
        self.clock.advance(self.limits.idle_timeout + 1)
        self.assertTrue(self.closed(idle, idle_t))
        self.assertFalse(self.closed(busy, busy_t))
        self.assertEqual(busy.dialog_count, 1)


class BufferBudgetTests(Flows):
    limits = ConnectionLimits(max_buffered=100_000)

    def test_buffered_octets_over_all_connections_are_bounded(self) -> None:
        """Partial messages of all connections together stay under max_buffered."""
        body = b"x" * 60_000
        head = invite_bytes(body=body)[:-1000]
        first, first_t = self.connect()
        first.dataReceived(head)
        second, second_t = self.connect()
        second.dataReceived(head)
        self.assertFalse(self.closed(first, first_t))
        self.assertTrue(self.closed(second, second_t))
        self.assertEqual(self.factory.budget.buffered_total, len(head))
        third, third_t = self.connect()
        third.dataReceived(OPTIONS)
        self.assertFalse(self.closed(third, third_t))


class DefaultsTests(SynchronousTestCase):
    def test_max_connections_stays_below_the_descriptor_limit(self) -> None:
        """At ``ulimit -n 1024`` a real caller's INVITE got EMFILE: the cap leaves room."""
        self.assertEqual(clamp_max_connections(1000, 1024), 480)
        self.assertEqual(clamp_max_connections(1000, 65536), 1000)
        self.assertEqual(clamp_max_connections(1000, None), 1000)

    def test_max_calls_from_the_port_range_and_descriptors(self) -> None:
        self.assertEqual(default_max_calls((10000, 20000)), 4750)
        self.assertEqual(default_max_calls((10000, 10010)), 3)
        self.assertEqual(default_max_calls((10000, 20000), 1024, 480), 240)

    def test_limits_refuse_nonsense(self) -> None:
        for bad in ({"max_connections": 0}, {"idle_timeout": -1}, {"max_buffered": 0}):
            with self.assertRaises(ValueError):
                ConnectionLimits(**bad)

    def test_rate_limited_warning_counts(self) -> None:
        clock = task.Clock()
        events: list[dict[str, Any]] = []
        self.patch(limits, "log", Logger(observer=events.append))
        warn = RateLimitedWarning(clock, 10.0, "busy")
        for _ in range(1000):
            warn()
            clock.advance(0.05)
        self.assertEqual(len(events), 5)
        self.assertEqual(warn.total, 1000)
