"""Tests for voiptwisted.sip.keepalive: RFC 5626 §4.4.1 CRLF keep-alive on task.Clock."""

from __future__ import annotations

import random

from twisted.internet import task
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.sip.keepalive import PING, FlowKeepalive


class AbortableTransport(StringTransport):
    def __init__(self) -> None:
        super().__init__()
        self.aborted = 0

    def abortConnection(self) -> None:
        self.aborted += 1
        self.loseConnection()


class FakeProtocol:
    def __init__(self) -> None:
        self.transport = AbortableTransport()


def make(interval: float = 30.0, jitter: float = 1.0, outbound: bool = True):
    """A keepalive on a fresh flow; *outbound*: the registrar's 2xx said Require: outbound."""
    clock = task.Clock()
    protocol = FakeProtocol()
    events: list[dict] = []
    keepalive = FlowKeepalive(reactor=clock, interval=interval, jitter=lambda: jitter)
    keepalive.log = Logger(observer=events.append)
    keepalive.connection_made(protocol)
    keepalive.registrar_outbound(outbound)
    return keepalive, protocol, clock, events


class KeepaliveTests(SynchronousTestCase):
    def test_ping_is_double_crlf(self) -> None:
        """RFC 5626 §4.4.1 / §3.5.1: the ping is CRLFCRLF."""
        self.assertEqual(PING, b"\r\n\r\n")

    def test_ping_every_interval(self) -> None:
        """RFC 5626 §4.4.1: one ping per interval, the next one after the pong."""
        keepalive, protocol, clock, _ = make(interval=30)
        clock.advance(29.9)
        self.assertEqual(protocol.transport.value(), b"")
        clock.advance(0.1)
        self.assertEqual(protocol.transport.value(), PING)
        self.assertTrue(keepalive.awaiting_pong)
        clock.advance(1)
        keepalive.pong_received()
        self.assertFalse(keepalive.awaiting_pong)
        clock.advance(29.9)
        self.assertEqual(protocol.transport.value(), PING)
        clock.advance(0.1)
        self.assertEqual(protocol.transport.value(), PING * 2)
        self.assertEqual(keepalive.pings_sent, 2)

    def test_interval_randomised_between_80_and_100_percent(self) -> None:
        """RFC 5626 §4.4.1: each interval is randomly 80-100 % of the keep-alive time."""
        _keepalive, protocol, clock, _ = make(interval=100, jitter=0.5)
        clock.advance(79.9)
        self.assertEqual(protocol.transport.value(), b"")
        clock.advance(0.1)
        self.assertEqual(protocol.transport.value(), PING)
        random.seed(1234)
        default = FlowKeepalive(reactor=task.Clock(), interval=10)
        delays = [default._next_delay() for _ in range(200)]
        self.assertTrue(all(8.0 <= d <= 10.0 for d in delays))
        self.assertGreater(max(delays) - min(delays), 1.0)

    def test_no_pong_within_10s_kills_flow(self) -> None:
        """RFC 5626 §4.4.1: no pong within 10 s -> the flow failed: abort so we reconnect."""
        keepalive, protocol, clock, events = make(interval=30)
        clock.advance(30)
        clock.advance(9.9)
        self.assertEqual(protocol.transport.aborted, 0)
        clock.advance(0.1)
        self.assertEqual(protocol.transport.aborted, 1)
        text = [formatEvent(e) for e in events]
        self.assertEqual(len(text), 2)
        self.assertIn("no pong within 10 s ends the flow (registrar signalled outbound", text[0])
        self.assertIn("no keepalive pong within 10 s", text[1])
        self.assertFalse(keepalive.running)
        clock.advance(300)
        self.assertEqual(protocol.transport.value(), PING)

    def test_pong_in_time_keeps_flow(self) -> None:
        keepalive, protocol, clock, _ = make(interval=30)
        clock.advance(30)
        clock.advance(9.9)
        keepalive.pong_received()
        clock.advance(5)
        self.assertEqual(protocol.transport.aborted, 0)

    def test_unsolicited_pong_is_harmless(self) -> None:
        keepalive, protocol, clock, _ = make(interval=30)
        keepalive.pong_received()
        clock.advance(30)
        self.assertEqual(protocol.transport.value(), PING)
        self.assertEqual(keepalive.pings_sent, 1)

    def test_set_interval_flow_timer(self) -> None:
        """RFC 5626 §4.4.1: the registrar's Flow-Timer replaces the configured interval."""
        keepalive, protocol, clock, _ = make(interval=30)
        clock.advance(10)
        keepalive.set_interval(15)
        clock.advance(14.9)
        self.assertEqual(protocol.transport.value(), b"")
        clock.advance(0.1)
        self.assertEqual(protocol.transport.value(), PING)
        keepalive.set_interval(0)
        self.assertEqual(keepalive.interval, 15)

    def test_connection_lost_stops(self) -> None:
        keepalive, protocol, clock, _ = make(interval=30)
        keepalive.connection_lost(protocol, None)
        self.assertFalse(keepalive.running)
        clock.advance(100)
        self.assertEqual(protocol.transport.value(), b"")
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_connection_lost_of_old_flow_ignored(self) -> None:
        keepalive, protocol, clock, _ = make(interval=30)
        second = FakeProtocol()
        keepalive.connection_made(second)
        keepalive.connection_lost(protocol, None)
        self.assertTrue(keepalive.running)
        clock.advance(30)
        self.assertEqual(second.transport.value(), PING)
        self.assertEqual(protocol.transport.value(), b"")

    def test_invalid_interval(self) -> None:
        self.assertRaises(ValueError, FlowKeepalive, reactor=task.Clock(), interval=0)


class RegistrarModeTests(SynchronousTestCase):
    """Issue 10 item 2: a missing pong fails a flow only where one is owed."""

    def test_registrar_without_outbound_flow_stays_up(self) -> None:
        """RFC 5626 §4.2.1 / §4.4.1: without ``Require: outbound`` in the REGISTER 2xx a UA
        may not expect a pong: pings keep going every interval, nothing is aborted, and the
        mode is logged once."""
        keepalive, protocol, clock, events = make(interval=30, outbound=False)
        for _ in range(5):
            clock.advance(30)
        self.assertEqual(protocol.transport.value(), PING * 5)
        self.assertEqual(protocol.transport.aborted, 0)
        self.assertFalse(keepalive.awaiting_pong)
        self.assertFalse(keepalive.pong_required)
        text = [formatEvent(e) for e in events]
        self.assertEqual(len(text), 1)
        self.assertIn("no pong expected (registrar without outbound, RFC 5626 §4.2.1)", text[0])

    def test_flow_that_answered_owes_pongs(self) -> None:
        """RFC 5626 §4.4.1: once this flow answered a ping, a later missing pong is a flow
        failure even without outbound at the registrar; the change is logged once."""
        keepalive, protocol, clock, events = make(interval=30, outbound=False)
        clock.advance(30)
        keepalive.pong_received()
        self.assertTrue(keepalive.pong_required)
        clock.advance(30)
        self.assertTrue(keepalive.awaiting_pong)
        clock.advance(10)
        self.assertEqual(protocol.transport.aborted, 1)
        text = [formatEvent(e) for e in events]
        self.assertIn("(flow answered a ping, RFC 5626 §4.4.1)", text[1])
        self.assertEqual(len(text), 3)

    def test_mode_belongs_to_the_flow(self) -> None:
        """A new flow starts without a pong owed until its own registrar 2xx or pong says so."""
        keepalive, _protocol, clock, _ = make(interval=30, outbound=True)
        second = FakeProtocol()
        keepalive.connection_made(second)
        self.assertFalse(keepalive.pong_required)
        clock.advance(30)
        clock.advance(10)
        self.assertEqual(second.transport.aborted, 0)
        self.assertEqual(clock.getDelayedCalls()[0].getTime(), 60)
