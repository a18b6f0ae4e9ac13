"""Bounds on what remote parties can make a stream listener hold (issue 14 finding 5).

Sans-I/O policy for the stream adapter (``voiptwisted.sip.protocol``): every
timer runs on an injected ``IReactorTime``, and closing a connection is a
callable the adapter hands in.

- :class:`ConnectionLimits`: the settings (a cap on inbound connections, the
  TLS-handshake, first-request, idle and partial-message timeouts, a budget for
  bytes buffered over all inbound connections).
- :class:`FlowGuard`: the state machine of one connection applying them.
- :class:`ConnectionBudget`: what one listener's connections hold together
  (open connections, buffered bytes).
- :class:`RateLimitedWarning`: one log line per interval, with a count, for
  events an attacker can repeat at will (refused connections, exhausted RTP
  ports): a flood must not become a flood of tracebacks.
- :func:`fd_limit`, :func:`clamp_max_connections`, :func:`default_max_calls`:
  defaults that stay below the process's file-descriptor limit and the RTP
  port range.
"""

from __future__ import annotations

import dataclasses
import weakref
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = [
    "DEFAULT_LIMITS",
    "ConnectionBudget",
    "ConnectionLimits",
    "FlowGuard",
    "RateLimitedWarning",
    "clamp_max_connections",
    "default_max_calls",
    "fd_limit",
    "rate_limited_warning",
]

log = Logger()

#: File descriptors kept out of every budget: listeners, log files, DNS, the epoll set.
FD_RESERVE = 64


@dataclasses.dataclass(frozen=True)
class ConnectionLimits:
    """What one inbound TLS/TCP connection (and all of a listener's together) may hold.

    ``max_connections``: inbound connections open at once per listener; more are
    closed as soon as accepted.  ``handshake_timeout``: seconds a TLS handshake may
    take (inbound and outbound flows).  ``request_timeout``: seconds an inbound
    connection may stay open without sending one complete request.
    ``idle_timeout``: seconds an inbound connection may stay with no call and no
    transaction.  ``message_timeout``: seconds a partial message (header block or
    body) may stay incomplete.  ``max_buffered``: octets of partial messages all
    of a listener's connections may hold together (each one is also bounded by the
    framer: 64 KiB of header, 1 MiB of body).  0 turns a timeout off.
    """

    max_connections: int = 1000
    handshake_timeout: float = 10.0
    request_timeout: float = 30.0
    idle_timeout: float = 120.0
    message_timeout: float = 10.0
    max_buffered: int = 64 << 20

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        for name in ("handshake_timeout", "request_timeout", "idle_timeout", "message_timeout"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be 0 (off) or more seconds")
        if self.max_buffered < 1:
            raise ValueError("max_buffered must be at least 1 octet")


DEFAULT_LIMITS = ConnectionLimits()


class RateLimitedWarning:
    """Log a warning at most once per *interval* seconds, with how often it happened.

    The first event is logged at once; later ones are counted and the count is
    logged with the first event after the interval has passed.  No timer is
    left behind: a quiet process logs nothing more.
    """

    def __init__(self, clock: IReactorTime, interval: float, message: str) -> None:
        self.clock = clock
        self.interval = interval
        self.message = message
        self.count = 0
        self.total = 0
        self._next = float("-inf")

    def __call__(self, **fields: Any) -> None:
        """One more event; log it with the count since the last line when the interval passed."""
        self.count += 1
        self.total += 1
        now = self.clock.seconds()
        if now < self._next:
            return
        count, self.count = self.count, 0
        self._next = now + self.interval
        log.warn(self.message + " ({count} in the last {interval:g} s)", count=count,
                 interval=self.interval, **fields)


#: The shared warnings of each clock (the reactor, or a test's Clock), by key.
_WARNINGS: weakref.WeakKeyDictionary[Any, dict[str, RateLimitedWarning]] = (
    weakref.WeakKeyDictionary()
)


def rate_limited_warning(
    clock: IReactorTime, key: str, message: str, interval: float = 10.0
) -> RateLimitedWarning:
    """The one :class:`RateLimitedWarning` for *key* on *clock*: every flow of a process
    shares it, so many connections hitting the same limit still log one line per
    *interval*."""
    warnings = _WARNINGS.setdefault(clock, {})
    warning = warnings.get(key)
    if warning is None:
        warning = warnings[key] = RateLimitedWarning(clock, interval, message)
    return warning


class ConnectionBudget:
    """What all inbound connections of one listener hold: how many, how many octets.

    The factory asks :meth:`admit` before building a protocol and each
    :class:`FlowGuard` reports its buffered octets through :meth:`buffered`.
    """

    def __init__(self, limits: ConnectionLimits, clock: IReactorTime) -> None:
        self.limits = limits
        self.open = 0
        self.buffered_total = 0
        self.refused = RateLimitedWarning(
            clock, 10.0, "refused inbound SIP connection(s): max_connections={limit} reached"
        )

    def admit(self) -> bool:
        """True (and one more counted open) when another connection fits under the cap."""
        if self.open >= self.limits.max_connections:
            self.refused(limit=self.limits.max_connections)
            return False
        self.open += 1
        return True

    def release(self) -> None:
        """A connection :meth:`admit` counted has closed."""
        self.open = max(0, self.open - 1)

    def buffered(self, delta: int) -> bool:
        """Add *delta* octets buffered; False when the listener's budget is now exceeded."""
        self.buffered_total = max(0, self.buffered_total + delta)
        return self.buffered_total <= self.limits.max_buffered


class FlowGuard:
    """The timeouts of one stream connection, on an injected clock.

    The adapter tells it what happens (:meth:`connection_made`,
    :meth:`handshake_completed`, :meth:`data_buffered`, :meth:`message_received`,
    :meth:`connection_lost`); the guard calls ``close(reason)`` when a bound is
    crossed.  ``busy()`` says whether the flow carries a call or a transaction
    (those keep an inbound connection open whatever ``idle_timeout`` says).

    An *inbound* guard applies every limit; an outbound one (a flow we opened,
    e.g. our RFC 5626 flow to the registrar) only the TLS-handshake timeout.
    """

    def __init__(
        self,
        limits: ConnectionLimits,
        clock: IReactorTime,
        close: Callable[[str], None],
        *,
        inbound: bool,
        busy: Callable[[], bool] = lambda: False,
        budget: ConnectionBudget | None = None,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self._close = close
        self.inbound = inbound
        self._busy = busy
        self._budget = budget
        self._buffered = 0
        self._last_activity = 0.0
        self.closed = False
        self._handshake: IDelayedCall | None = None
        self._first_request: IDelayedCall | None = None
        self._partial: IDelayedCall | None = None
        self._idle: IDelayedCall | None = None

    @property
    def pending_timers(self) -> int:
        """Timers this guard still has scheduled (0 once the connection is gone)."""
        return sum(
            1 for call in (self._handshake, self._first_request, self._partial, self._idle)
            if call is not None and call.active()
        )  # fmt: skip

    def _later(self, delay: float, function: Callable[[], None]) -> IDelayedCall | None:
        return self.clock.callLater(delay, function) if delay > 0 else None

    @staticmethod
    def _cancel(call: IDelayedCall | None) -> None:
        if call is not None and call.active():
            call.cancel()

    def connection_made(self, secure: bool) -> None:
        """Start the handshake timer (TLS) and, inbound, the first-request and idle timers."""
        self._last_activity = self.clock.seconds()
        if secure:
            self._handshake = self._later(self.limits.handshake_timeout, self._handshake_late)
        if self.inbound:
            self._first_request = self._later(self.limits.request_timeout, self._no_request)
            self._idle = self._later(self.limits.idle_timeout, self._check_idle)

    def handshake_completed(self) -> None:
        """The TLS handshake finished in time."""
        self._cancel(self._handshake)
        self._handshake = None

    @property
    def handshaking(self) -> bool:
        """True while a TLS handshake is still pending."""
        return self._handshake is not None and self._handshake.active()

    def data_buffered(self, octets: int) -> None:
        """The framer now holds *octets* of a partial message (0: none).

        The partial-message timer runs from the moment a message starts until it is
        complete (a slow-loris sender that trickles a header or body is closed);
        the listener's budget is charged with the change.
        """
        if not self.inbound or self.closed:
            return
        delta, self._buffered = octets - self._buffered, octets
        if self._budget is not None and delta and not self._budget.buffered(delta) and octets:
            self._fail("too much buffered over all connections")
            return
        if octets == 0:
            self._cancel(self._partial)
            self._partial = None
        elif self._partial is None:
            self._partial = self._later(self.limits.message_timeout, self._partial_late)

    def message_received(self) -> None:
        """A complete SIP message arrived: the flow is not idle.  (CRLF keepalives do
        not count: they would let a peer hold a connection that carries nothing.)"""
        self._last_activity = self.clock.seconds()
        self._cancel(self._first_request)
        self._first_request = None

    def connection_lost(self) -> None:
        """The connection is gone: cancel every timer, give back the budget."""
        self.closed = True
        for call in (self._handshake, self._first_request, self._partial, self._idle):
            self._cancel(call)
        self._handshake = self._first_request = self._partial = self._idle = None
        if self._budget is not None and self._buffered:
            self._budget.buffered(-self._buffered)
        self._buffered = 0

    def _fail(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self._close(reason)

    def _handshake_late(self) -> None:
        self._handshake = None
        self._fail(f"TLS handshake not done within {self.limits.handshake_timeout:g} s")

    def _no_request(self) -> None:
        self._first_request = None
        self._fail(f"no complete request within {self.limits.request_timeout:g} s")

    def _partial_late(self) -> None:
        self._partial = None
        self._fail(f"partial message not completed within {self.limits.message_timeout:g} s")

    def _check_idle(self) -> None:
        """Close an inbound flow with no call and no transaction since ``idle_timeout``."""
        self._idle = None
        timeout = self.limits.idle_timeout
        if self._busy():
            self._last_activity = self.clock.seconds()
        idle_for = self.clock.seconds() - self._last_activity
        if idle_for >= timeout:
            self._fail(f"idle (no call, no transaction) for {timeout:g} s")
            return
        self._idle = self._later(timeout - idle_for, self._check_idle)


def fd_limit() -> int | None:
    """The process's soft ``RLIMIT_NOFILE`` (None where it cannot be read or is unlimited)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


def clamp_max_connections(requested: int, fds: int | None) -> int:
    """*requested*, or half the descriptors left after the reserve when that is less.

    The other half stays for calls' RTP/RTCP sockets: with connections alone able to
    take every descriptor, a real caller's INVITE found none (finding 5, EMFILE).
    One log line says so when the cap is lowered.
    """
    if fds is None:
        return requested
    room = max(1, (fds - FD_RESERVE) // 2)
    if requested <= room:
        return requested
    log.warn(
        "max_connections {requested} lowered to {room}: the process may open {fds} files "
        "(ulimit -n); raise it to allow more",
        requested=requested, room=room, fds=fds,
    )
    return room


def default_max_calls(
    port_range: tuple[int, int], fds: int | None = None, max_connections: int = 0
) -> int:
    """Concurrent calls the RTP port range (and the descriptor limit) can carry.

    Each call takes an even RTP port and the next one for RTCP (two descriptors):
    ``(high - low) // 2`` pairs, less 5 % (at least 2) of headroom for ports other
    programs hold and calls being torn down; and no more than the descriptors left
    after *max_connections* and the reserve allow.
    """
    low, high = port_range
    pairs = (high - (low + low % 2)) // 2
    calls = pairs - max(2, pairs // 20)
    if fds is not None:
        calls = min(calls, (fds - FD_RESERVE - max_connections) // 2)
    return max(1, calls)
