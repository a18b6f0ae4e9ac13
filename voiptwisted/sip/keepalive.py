"""RFC 5626 §4.4.1 CRLF keep-alive for a connection-oriented SIP flow.

The UA sends a double CRLF ("ping") on the flow and the registrar or edge proxy answers with a
single CRLF ("pong").  Pings go out on every flow (they keep NAT and firewall bindings open),
but a missing pong means the flow failed only where a pong is owed: the registrar signalled
outbound support (``Require: outbound`` in its REGISTER 2xx, RFC 5626 §4.2.1), or this flow
has already answered a ping.  Registrars without RFC 5626 (Asterisk ``res_pjsip``, Kamailio
with ``tcp_crlf_ping=no``) read the ping and say nothing; aborting those flows every interval
killed the calls on them (issue 10).  A flow that owes a pong and sends none within 10 seconds
is dead: we abort the connection so the reconnecting service opens a new flow, which
re-registers.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from voiptwisted.sip.framing import PING

__all__ = ["PING", "PONG_TIMEOUT", "FlowKeepalive"]

#: RFC 5626 §4.4.1: without a pong within 10 seconds the flow has failed.
PONG_TIMEOUT = 10.0


class FlowKeepalive:
    """Ping one SIP flow every ``interval`` seconds (randomised to 80-100 %, RFC 5626 §4.4.1).

    The protocol calls :meth:`connection_made` / :meth:`connection_lost` (its ``keepalive`` hook)
    and :meth:`pong_received` when the framer yields a CRLF pong.  The registration calls
    :meth:`set_interval` with the registrar's ``Flow-Timer`` value and
    :meth:`registrar_outbound` with whether its 2xx said ``Require: outbound``.  Which mode
    a flow runs in (:attr:`pong_required`) is logged once per flow, and again if it changes.
    """

    log = Logger()

    def __init__(
        self,
        protocol: Any = None,
        *,
        reactor: IReactorTime,
        interval: float = 30.0,
        pong_timeout: float = PONG_TIMEOUT,
        jitter: Callable[[], float] | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("keepalive interval must be positive")
        self.clock: IReactorTime = reactor
        self.interval = float(interval)
        self.pong_timeout = float(pong_timeout)
        self._jitter = jitter if jitter is not None else lambda: random.uniform(0.8, 1.0)
        self.protocol: Any = None
        self._next_ping: IDelayedCall | None = None
        self._pong_deadline: IDelayedCall | None = None
        self.pings_sent = 0
        self.pongs_received = 0
        self._outbound = False
        self._answered = False
        self._logged_mode: bool | None = None
        if protocol is not None:
            self.connection_made(protocol)

    @property
    def running(self) -> bool:
        """True while a ping or a pong deadline is scheduled."""
        return self._next_ping is not None or self._pong_deadline is not None

    @property
    def pong_required(self) -> bool:
        """Whether a missing pong fails this flow: the registrar signalled outbound
        (RFC 5626 §4.2.1) or the flow has answered a ping before (§4.4.1)."""
        return self._outbound or self._answered

    def registrar_outbound(self, supported: bool) -> None:
        """The registrar's 2xx on this flow did (or did not) carry ``Require: outbound``."""
        self._outbound = bool(supported)

    @property
    def awaiting_pong(self) -> bool:
        """True between a ping and its pong (or the 10 s deadline)."""
        return self._pong_deadline is not None

    def connection_made(self, protocol: Any) -> None:
        """Start pinging the new flow ``protocol`` (its ``transport`` carries the pings)."""
        self.stop()
        self.protocol = protocol
        self._outbound = self._answered = False
        self._logged_mode = None
        self._schedule_ping()

    def connection_lost(self, protocol: Any = None, reason: object = None) -> None:
        """The flow is gone: cancel every timer (the service opens the next flow)."""
        if protocol is None or protocol is self.protocol:
            self.stop()
            self.protocol = None

    def start(self) -> None:
        """(Re)start pinging the current flow."""
        self.stop()
        if self.protocol is not None:
            self._schedule_ping()

    def stop(self) -> None:
        """Cancel the pending ping and pong deadline; idempotent."""
        for call in (self._next_ping, self._pong_deadline):
            if call is not None and call.active():
                call.cancel()
        self._next_ping = None
        self._pong_deadline = None

    def set_interval(self, seconds: float) -> None:
        """Use the registrar's ``Flow-Timer`` (RFC 5626 §4.4.1) as the new interval.

        A pending ping is rescheduled so the new interval applies at once.
        """
        if seconds <= 0:
            self.log.warn("ignoring non-positive keepalive interval {seconds}", seconds=seconds)
            return
        self.interval = float(seconds)
        if self._next_ping is not None:
            self._next_ping.cancel()
            self._schedule_ping()

    def pong_received(self) -> None:
        """The flow answered (RFC 5626 §4.4.1 pong): it is alive, schedule the next ping."""
        self.pongs_received += 1
        if self.protocol is not None:
            self._answered = True
        if self._pong_deadline is None:
            return
        self._pong_deadline.cancel()
        self._pong_deadline = None
        self._schedule_ping()

    def _next_delay(self) -> float:
        fraction = min(1.0, max(0.8, self._jitter()))
        return self.interval * fraction

    def _schedule_ping(self) -> None:
        self._next_ping = self.clock.callLater(self._next_delay(), self._ping)

    def _ping(self) -> None:
        self._next_ping = None
        transport = getattr(self.protocol, "transport", None)
        if transport is None:
            return
        transport.write(PING)
        self.pings_sent += 1
        required = self.pong_required
        self._log_mode(transport, required)
        if required:
            self._pong_deadline = self.clock.callLater(self.pong_timeout, self._flow_dead)
        else:
            self._schedule_ping()

    def _log_mode(self, transport: Any, required: bool) -> None:
        """One line per flow saying whether a missing pong ends it (and one if that changes)."""
        if self._logged_mode is required:
            return
        self._logged_mode = required
        if required:
            why = "registrar signalled outbound" if self._outbound else "flow answered a ping"
            self.log.info(
                "keepalive on SIP flow to {peer}: CRLF ping every {interval:g} s, "
                "no pong within {timeout:g} s ends the flow ({why}, RFC 5626 §4.4.1)",
                peer=_peer(transport), interval=self.interval, timeout=self.pong_timeout,
                why=why,
            )
        else:
            self.log.info(
                "keepalive on SIP flow to {peer}: CRLF ping every {interval:g} s, no pong "
                "expected (registrar without outbound, RFC 5626 §4.2.1)",
                peer=_peer(transport), interval=self.interval,
            )

    def _flow_dead(self) -> None:
        self._pong_deadline = None
        transport = getattr(self.protocol, "transport", None)
        self.log.warn(
            "SIP flow to {peer} is dead: no keepalive pong within {timeout:g} s; reconnecting",
            peer=_peer(transport),
            timeout=self.pong_timeout,
        )
        if transport is None:
            return
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()


def _peer(transport: Any) -> str:
    try:
        peer = transport.getPeer()
    except Exception:
        return "the registrar"
    host, port = getattr(peer, "host", None), getattr(peer, "port", None)
    if host is None:
        return str(peer)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
