"""One drift-free media clock per process: the 20 ms tick that paces every call's audio.

Re-arming ``callLater(0.02)`` after each tick drifts (each tick adds its own
lateness); instead every deadline is computed from the start time as
``start + n * interval``, so lateness never accumulates.  A tick that runs
late enough to cover several intervals reports how many elapsed, so callers
advance their RTP timestamps by that many frames and the media clock stays
continuous (RFC 3550 §5.1: the timestamp reflects the sampling instant).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["Pacer", "default_pacer"]

TickCallback = Callable[[int], object]

#: Fraction of an interval tolerated as float rounding when counting elapsed ticks.
_EPSILON = 1e-6


class Pacer:
    """Calls every registered callback once per elapsed tick group, against absolute deadlines.

    ``add(callback)`` registers ``callback(ticks: int)``; ``ticks`` is the
    number of intervals since the previous tick (1 normally, more after a
    stall).  The pacer starts on the first ``add`` and stops when the last
    callback is removed.  A callback that raises is logged and removed, so a
    broken call cannot stall or flood the others.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, interval: float = 0.02) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.clock = clock
        self.interval = interval
        self._callbacks: dict[TickCallback, None] = {}
        self._call: IDelayedCall | None = None
        self._start = 0.0
        self._in_tick = False
        #: Intervals elapsed since the pacer (re)started.
        self.tick_count = 0
        #: Intervals that passed without their own tick (a late tick covered them).
        self.missed_ticks = 0
        #: How late (seconds) the latest tick ran after its deadline, and the worst so far.
        self.last_lateness = 0.0
        self.max_lateness = 0.0

    @property
    def running(self) -> bool:
        """True while a tick is scheduled."""
        return self._call is not None

    def __len__(self) -> int:
        return len(self._callbacks)

    def __contains__(self, callback: object) -> bool:
        return callback in self._callbacks

    def add(self, callback: TickCallback) -> None:
        """Register *callback* for future ticks (idempotent); starts the pacer if idle.

        A callback added during a tick is first called on the next tick.
        """
        self._callbacks[callback] = None
        if self._call is None and not self._in_tick:
            self._start = self.clock.seconds()
            self.tick_count = 0
            self._schedule()

    def remove(self, callback: TickCallback) -> None:
        """Unregister *callback* (no error if absent); stops the pacer when none remain.

        A callback removed during a tick is not called for the rest of that tick.
        """
        self._callbacks.pop(callback, None)
        if not self._callbacks and self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _schedule(self) -> None:
        deadline = self._start + (self.tick_count + 1) * self.interval
        self._call = self.clock.callLater(max(0.0, deadline - self.clock.seconds()), self._tick)

    def _tick(self) -> None:
        now = self.clock.seconds()
        elapsed = int((now - self._start) / self.interval + _EPSILON)
        ticks = elapsed - self.tick_count
        if ticks <= 0:
            # Woken early (clock rounding): wait for the real deadline.
            self._schedule()
            return
        self.last_lateness = max(0.0, now - (self._start + (self.tick_count + 1) * self.interval))
        self.max_lateness = max(self.max_lateness, self.last_lateness)
        self.tick_count = elapsed
        self.missed_ticks += ticks - 1
        self._call = None
        self._in_tick = True
        for callback in list(self._callbacks):
            if callback not in self._callbacks:
                continue
            try:
                callback(ticks)
            except Exception:
                self.log.failure("pacer callback {callback!r} failed; removed", callback=callback)
                self._callbacks.pop(callback, None)
        self._in_tick = False
        if self._callbacks:
            self._schedule()


_defaults: weakref.WeakKeyDictionary[object, Pacer] = weakref.WeakKeyDictionary()


def default_pacer(reactor: IReactorTime | None = None) -> Pacer:
    """The shared 20 ms pacer for *reactor* (default: the global reactor, resolved here)."""
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor  # type: ignore[assignment]
    pacer = _defaults.get(reactor)
    if pacer is None:
        pacer = Pacer(reactor)  # type: ignore[arg-type]
        _defaults[reactor] = pacer
    return pacer
