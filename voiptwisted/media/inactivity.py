"""``InactivityTimer``: end a call whose media has stopped arriving (issue 17 item 2).

A far end that vanishes (crash, dead NAT binding, a BYE lost in a dead flow)
otherwise leaves the call, its two UDP sockets and its place in the call count
for ever.  The timer does not move per packet: the RTP protocol only writes the
time of its last accepted RTP or RTCP packet, and the timer wakes once per
timeout to compare (the aioquic shape: the core says when it next needs waking).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["InactivityTimer"]

#: Rounding slack (seconds): a wake-up scheduled for the deadline counts as reaching it.
_SLACK = 1e-3


class InactivityTimer:
    """Calls *expired* once nothing has arrived for the current timeout.

    *last_activity* returns the clock time of the last sign of life; *timeout*
    returns the limit that applies now (it may change with the call's direction:
    hold), 0 meaning no limit.  All time goes through *clock* (``IReactorTime``).
    """

    def __init__(
        self,
        clock: Any,
        last_activity: Callable[[], float],
        timeout: Callable[[], float],
        expired: Callable[[float], None],
    ) -> None:
        self.clock = clock
        self._last_activity = last_activity
        self._timeout = timeout
        self._expired = expired
        self._call: Any = None
        self._running = False

    @property
    def armed(self) -> bool:
        """True while a limit applies and the timer is waiting for it."""
        return self._call is not None

    def start(self) -> None:
        """Begin watching (idempotent)."""
        self._running = True
        self.reschedule()

    def stop(self) -> None:
        """Stop watching for good; *expired* will not be called."""
        self._running = False
        self._cancel()

    def reschedule(self) -> None:
        """The applicable timeout may have changed (a re-negotiation): wake up accordingly."""
        self._cancel()
        if self._running:
            self._check()

    def _cancel(self) -> None:
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _check(self) -> None:
        self._call = None
        if not self._running:
            return
        limit = self._timeout()
        if limit <= 0:
            return
        idle = self.clock.seconds() - self._last_activity()
        if idle >= limit - _SLACK:
            self._running = False
            self._expired(limit)
            return
        self._call = self.clock.callLater(limit - idle, self._check)
