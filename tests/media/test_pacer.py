"""Tests for voiptwisted.media.pacer on task.Clock: drift-free shared 20 ms tick."""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.media.pacer import Pacer, default_pacer


class Recorder:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[tuple[float, int]] = []

    def __call__(self, ticks: int) -> None:
        self.calls.append((self.clock.seconds(), ticks))

    @property
    def total(self) -> int:
        return sum(t for _, t in self.calls)


class PacerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.pacer = Pacer(self.clock)

    def test_no_drift_over_10000_ticks(self) -> None:
        """Deadlines are start + n * interval: 10,000 ticks end exactly at 200 s."""
        rec = Recorder(self.clock)
        self.pacer.add(rec)
        for _ in range(10_000):
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)
            self.clock.advance(self.clock.getDelayedCalls()[0].getTime() - self.clock.seconds())
        self.assertEqual(len(rec.calls), 10_000)
        self.assertEqual(rec.total, 10_000)
        self.assertAlmostEqual(rec.calls[-1][0], 1000.0 + 200.0, places=6)
        self.assertEqual(self.pacer.missed_ticks, 0)

    def test_late_ticks_do_not_accumulate(self) -> None:
        """Each tick 7 ms late (a busy reactor) still keeps the long-run rate exact."""
        rec = Recorder(self.clock)
        self.pacer.add(rec)
        for _ in range(1000):
            due = self.clock.getDelayedCalls()[0].getTime()
            self.clock.advance(due - self.clock.seconds() + 0.007)
        self.assertEqual(rec.total, 1000)
        self.assertAlmostEqual(rec.calls[-1][0], 1000.0 + 20.0 + 0.007, places=6)
        self.assertEqual(self.pacer.missed_ticks, 0)
        self.assertAlmostEqual(self.pacer.max_lateness, 0.007, places=6)

    def test_missed_ticks_counted_and_reported(self) -> None:
        """A stall covering several intervals yields one call with the elapsed count."""
        rec = Recorder(self.clock)
        self.pacer.add(rec)
        self.clock.advance(0.02)
        self.clock.advance(0.075)  # now at 95 ms: ticks 2, 3 and 4 are due
        self.assertEqual([t for _, t in rec.calls], [1, 3])
        self.assertEqual(self.pacer.missed_ticks, 2)
        self.assertEqual(self.pacer.tick_count, 4)
        self.clock.advance(0.005)  # 100 ms: tick 5, back on the grid
        self.assertEqual([t for _, t in rec.calls], [1, 3, 1])
        self.assertEqual(rec.total, 5)

    def test_rtp_timestamps_continuous(self) -> None:
        """Timestamps derived from the tick count advance 160 per 20 ms even across stalls."""
        timestamps: list[int] = []
        state = {"ts": 0}

        def send(ticks: int) -> None:
            state["ts"] += 160 * ticks
            timestamps.append(state["ts"])

        self.pacer.add(send)
        for step in (0.02, 0.02, 0.1, 0.02, 0.03, 0.011):
            self.clock.advance(step)
        self.assertEqual(timestamps[-1], 160 * 10)

    def test_starts_on_first_add_stops_when_empty(self) -> None:
        self.assertFalse(self.pacer.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        a, b = Recorder(self.clock), Recorder(self.clock)
        self.pacer.add(a)
        self.pacer.add(b)
        self.assertTrue(self.pacer.running)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # one timer for all calls
        self.pacer.remove(a)
        self.assertTrue(self.pacer.running)
        self.pacer.remove(b)
        self.assertFalse(self.pacer.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.pacer.remove(b)  # idempotent

    def test_restart_uses_new_start_time(self) -> None:
        rec = Recorder(self.clock)
        self.pacer.add(rec)
        self.clock.advance(0.02)
        self.pacer.remove(rec)
        self.clock.advance(0.013)
        self.pacer.add(rec)
        self.clock.advance(0.02)
        self.assertEqual([t for _, t in rec.calls], [1, 1])
        self.assertAlmostEqual(rec.calls[-1][0], 1000.053, places=6)

    def test_add_and_remove_during_tick(self) -> None:
        """A callback removed during a tick is not called; one added is called next tick."""
        self.pacer = Pacer(self.clock, slots=1)
        order: list[str] = []
        late = Recorder(self.clock)

        def first(ticks: int) -> None:
            order.append("first")
            self.pacer.remove(second)
            self.pacer.add(late)

        def second(ticks: int) -> None:
            order.append("second")

        self.pacer.add(first)
        self.pacer.add(second)
        self.clock.advance(0.02)
        self.assertEqual(order, ["first"])
        self.assertEqual(late.calls, [])
        self.clock.advance(0.02)
        self.assertEqual(len(late.calls), 1)

    def test_remove_all_during_tick_stops(self) -> None:
        def only(ticks: int) -> None:
            self.pacer.remove(only)

        self.pacer.add(only)
        self.clock.advance(0.02)
        self.assertFalse(self.pacer.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_remove_all_and_readd_during_tick_keeps_one_timer(self) -> None:
        rec = Recorder(self.clock)

        def swap(ticks: int) -> None:
            self.pacer.remove(swap)
            self.pacer.add(rec)

        self.pacer.add(swap)
        self.clock.advance(0.02)
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0.02)
        self.assertEqual(rec.calls, [(1000.04, 1)])

    def test_failing_callback_removed_others_continue(self) -> None:
        rec = Recorder(self.clock)

        def broken(ticks: int) -> None:
            raise RuntimeError("boom")

        self.pacer.add(broken)
        self.pacer.add(rec)
        self.clock.advance(0.02)
        self.clock.advance(0.02)
        self.assertNotIn(broken, self.pacer)
        self.assertEqual(len(rec.calls), 2)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_bad_interval(self) -> None:
        with self.assertRaises(ValueError):
            Pacer(self.clock, interval=0)
        with self.assertRaises(ValueError):
            Pacer(self.clock, slots=0)


class PhaseTests(SynchronousTestCase):
    """The interval is split into phases; each callback keeps its own exact period."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.pacer = Pacer(self.clock)

    def run_until(self, end: float) -> int:
        """Advance timer by timer (as a reactor would) until *end*; returns the wake-ups."""
        wakeups = 0
        while self.clock.getDelayedCalls():
            self.assertEqual(len(self.clock.getDelayedCalls()), 1)  # one timer, always
            due = self.clock.getDelayedCalls()[0].getTime()
            if due > end + 1e-9:
                break
            self.clock.advance(due - self.clock.seconds())
            wakeups += 1
        return wakeups

    def test_least_busy_phase(self) -> None:
        callbacks = [Recorder(self.clock) for _ in range(25)]
        for callback in callbacks:
            self.pacer.add(callback)
        sizes = sorted((len(group) for group in self.pacer._groups), reverse=True)
        self.assertEqual(sizes, [3] * 5 + [2] * 5)

    def test_phases_spread_and_each_period_exact(self) -> None:
        """10 calls added together send 2 ms apart, each every 20 ms without drift.

        Phase 0 is first served one interval after the start, phase k k * 2 ms after it.
        """
        recorders = [Recorder(self.clock) for _ in range(10)]
        for recorder in recorders:
            self.pacer.add(recorder)
        self.run_until(1000.0 + 20.0)
        firsts = sorted(recorder.calls[0][0] for recorder in recorders)
        for index, first in enumerate(firsts):
            self.assertAlmostEqual(first, 1000.0 + 0.002 * (index + 1), places=6)
        for recorder in recorders:
            times = [at for at, _ in recorder.calls]
            self.assertGreaterEqual(len(times), 1000)
            for n, at in enumerate(times):
                self.assertAlmostEqual(at, times[0] + 0.02 * n, places=6)
            self.assertEqual({ticks for _, ticks in recorder.calls}, {1})
        self.assertEqual(self.pacer.missed_ticks, 0)

    def test_empty_phases_cost_no_wakeups(self) -> None:
        """One call: one wake-up per interval, not one per phase."""
        self.pacer.add(Recorder(self.clock))
        self.assertEqual(self.run_until(1000.0 + 2.0), 100)

    def test_late_wakeup_serves_due_phases_in_deadline_order(self) -> None:
        order: list[int] = []
        for index in range(3):
            self.pacer.add(lambda ticks, index=index: order.append(index))
        self.clock.advance(0.05)  # phases 0, 1, 2 have deadlines at 20/40, 2/22/42, 4/24/44 ms
        self.assertEqual(order, [1, 2, 0])
        self.assertEqual(self.pacer.missed_ticks, 1 + 2 + 2)

    def test_monitor_sees_lateness_and_busy_time_per_phase(self) -> None:
        seen: list[tuple[float, float]] = []
        self.pacer.monitor = lambda lateness, busy: seen.append((lateness, busy))

        def slow(ticks: int) -> None:
            self.clock.advance(0.0005)

        self.pacer.add(slow)
        self.clock.advance(0.023)
        self.assertEqual(len(seen), 1)
        self.assertAlmostEqual(seen[0][0], 0.003, places=6)
        self.assertAlmostEqual(seen[0][1], 0.0005, places=6)

    def test_added_to_running_pacer_joins_its_phase_grid(self) -> None:
        """A call added mid-run to an idle phase is served on that phase's grid."""
        first = Recorder(self.clock)
        self.pacer.add(first)
        self.run_until(1000.03)
        self.clock.advance(1000.0305 - self.clock.seconds())
        second = Recorder(self.clock)
        self.pacer.add(second)
        self.run_until(1000.0 + 0.1)
        self.assertAlmostEqual(second.calls[0][0], 1000.0 + 0.042, places=6)
        for n, (at, _ticks) in enumerate(first.calls[:3]):
            self.assertAlmostEqual(at, 1000.0 + 0.02 * (n + 1), places=6)


class DefaultPacerTests(SynchronousTestCase):
    def test_shared_per_reactor(self) -> None:
        clock = Clock()
        self.assertIs(default_pacer(clock), default_pacer(clock))
        self.assertIsNot(default_pacer(clock), default_pacer(Clock()))
        self.assertEqual(default_pacer(clock).interval, 0.02)

