"""One drift-free media clock per process: the 20 ms tick that paces every call's audio.

Re-arming ``callLater(0.02)`` after each tick drifts (each tick adds its own
lateness); instead every deadline is computed from the start time as
``start + offset + n * interval``, so lateness never accumulates.  A tick that
runs late enough to cover several intervals reports how many elapsed, so
callers advance their RTP timestamps by that many frames and the media clock
stays continuous (RFC 3550 §5.1: the timestamp reflects the sampling instant).

The 20 ms frame is divided into ``slots`` phases (default 10, so 2 ms apart)
and each call joins the least busy phase.  Sending every call's packet in one
burst at the top of the frame would make the last call of a large burst late
by the time it takes to send all the others (about 5 ms at 200 calls); spread
over phases, each wake-up sends a tenth of them and every call keeps its own
exact 20 ms period.  It is still one clock: one timer, absolute deadlines.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

__all__ = ["DEFAULT_SLOTS", "Pacer", "default_pacer"]

TickCallback = Callable[[int], object]

#: Phases per interval of the default pacer: 2 ms apart at 20 ms.
DEFAULT_SLOTS = 10

#: Fraction of an interval tolerated as float rounding when counting elapsed ticks.
_EPSILON = 1e-6


class Pacer:
    """Calls every registered callback once per elapsed interval, against absolute deadlines.

    ``add(callback)`` registers ``callback(ticks: int)``; ``ticks`` is the
    number of intervals since that callback's previous tick (1 normally, more
    after a stall).  Each callback belongs to one of ``slots`` phases spread
    evenly over the interval; a phase's deadlines are ``start + offset +
    n * interval``.  The pacer starts on the first ``add`` and stops when the
    last callback is removed.  A callback that raises is logged and removed,
    so a broken call cannot stall or flood the others.
    """

    log = Logger()

    def __init__(
        self, clock: IReactorTime, interval: float = 0.02, slots: int = DEFAULT_SLOTS
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.clock = clock
        self.interval = interval
        self.slots = slots
        self._offsets = [interval * slot / slots for slot in range(slots)]
        self._groups: list[dict[TickCallback, None]] = [{} for _ in range(slots)]
        self._slot_of: dict[TickCallback, int] = {}
        #: Per phase: the number of its deadlines already served since the start.
        self._served = [0] * slots
        self._call: IDelayedCall | None = None
        self._start = 0.0
        self._in_tick = False
        #: Intervals served by the most recent phase since the pacer (re)started.
        self.tick_count = 0
        #: Intervals that passed without their own tick (a late tick covered them).
        self.missed_ticks = 0
        #: How late (seconds) the latest phase ran after its deadline, and the worst so far.
        self.last_lateness = 0.0
        self.max_lateness = 0.0
        #: Optional monitor called after each phase ran, with ``(lateness, busy)`` in
        #: seconds: how late it started and how long its callbacks took, so
        #: ``lateness + busy`` is how late the phase's last packet went out.
        self.monitor: Callable[[float, float], object] | None = None

    @property
    def running(self) -> bool:
        """True while a tick is scheduled."""
        return self._call is not None

    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, callback: object) -> bool:
        return callback in self._slot_of

    def add(self, callback: TickCallback) -> None:
        """Register *callback* in the least busy phase (idempotent); starts the pacer if idle.

        A callback added during a tick is first called on its phase's next deadline.
        """
        if callback in self._slot_of:
            return
        now = self.clock.seconds()
        if not self._slot_of and self._call is None and not self._in_tick:
            self._start = now
            self.tick_count = 0
            self._served = [0] * self.slots
        slot = min(range(self.slots), key=lambda index: len(self._groups[index]))
        if not self._groups[slot]:
            self._served[slot] = self._elapsed(slot, now)
        self._groups[slot][callback] = None
        self._slot_of[callback] = slot
        if not self._in_tick:
            self._schedule()

    def remove(self, callback: TickCallback) -> None:
        """Unregister *callback* (no error if absent); stops the pacer when none remain.

        A callback removed during a tick is not called for the rest of that tick.
        """
        slot = self._slot_of.pop(callback, None)
        if slot is None:
            return
        self._groups[slot].pop(callback, None)
        if not self._slot_of and self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _elapsed(self, slot: int, now: float) -> int:
        """How many of *slot*'s deadlines have passed at *now* (-1 before its first one)."""
        return math.floor((now - self._start - self._offsets[slot]) / self.interval + _EPSILON)

    def _deadline(self, slot: int) -> float:
        """*slot*'s next unserved deadline."""
        return self._start + self._offsets[slot] + (self._served[slot] + 1) * self.interval

    def _schedule(self) -> None:
        """(Re)arm the one timer for the earliest deadline of any phase that has callbacks."""
        busy = [slot for slot in range(self.slots) if self._groups[slot]]
        if not busy:
            return
        due = min(self._deadline(slot) for slot in busy)
        if self._call is not None and self._call.active():
            if self._call.getTime() <= due:
                return
            self._call.cancel()
        self._call = self.clock.callLater(max(0.0, due - self.clock.seconds()), self._tick)

    def _tick(self) -> None:
        now = self.clock.seconds()
        self._call = None
        due = [
            (self._deadline(slot), slot)
            for slot in range(self.slots)
            if self._groups[slot] and self._elapsed(slot, now) > self._served[slot]
        ]
        self._in_tick = True
        for deadline, slot in sorted(due):
            self._run(slot, deadline, now)
        self._in_tick = False
        if self._slot_of:
            self._schedule()

    def _run(self, slot: int, deadline: float, now: float) -> None:
        """Serve one phase: every callback in it once, with the intervals elapsed."""
        elapsed = self._elapsed(slot, now)
        ticks = elapsed - self._served[slot]
        self._served[slot] = elapsed
        self.tick_count = elapsed
        self.missed_ticks += ticks - 1
        self.last_lateness = max(0.0, now - deadline)
        self.max_lateness = max(self.max_lateness, self.last_lateness)
        group = self._groups[slot]
        for callback in list(group):
            if callback not in group:
                continue
            try:
                callback(ticks)
            except Exception:
                self.log.failure("pacer callback {callback!r} failed; removed", callback=callback)
                self.remove(callback)
        if self.monitor is not None:
            self.monitor(self.last_lateness, self.clock.seconds() - now)


_defaults: weakref.WeakKeyDictionary[object, Pacer] = weakref.WeakKeyDictionary()


def default_pacer(reactor: IReactorTime) -> Pacer:
    """The shared 20 ms pacer of *reactor*: one per reactor, made on first use."""
    pacer = _defaults.get(reactor)
    if pacer is None:
        pacer = Pacer(reactor)
        _defaults[reactor] = pacer
    return pacer
