"""RFC 3261 §17 timers over an unreliable transport (UDP): A, B, D, E, F, G, H, I, J, K.

Every transaction here is built with ``reliable=False`` on a ``task.Clock`` and a
list standing in for the transport; the reliable-transport behaviour (timers D, I,
J, K zero, no retransmissions) is checked alongside so the switch is visible.
"""

from __future__ import annotations

import gc
import weakref

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_transaction import request, response
from voiptwisted.sip.message import Request, Response
from voiptwisted.sip.transaction import (
    T1,
    T2,
    T4,
    TIMER_D,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    Timers,
    TransactionTimeout,
)


class UDPHarness(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.timers = Timers(self.clock)
        self.sent: list[Request | Response] = []
        self.terminated: list[object] = []

    def kwargs(self, reliable: bool = False) -> dict[str, object]:
        return {
            "send": self.sent.append,
            "timers": self.timers,
            "on_terminated": self.terminated.append,
            "reliable": reliable,
        }

    def send_times(self, until: float, step: float = 0.25) -> list[float]:
        """Advance the clock to *until*, noting the time of each message sent."""
        times = []
        seen = len(self.sent)
        elapsed = 0.0
        while elapsed < until:
            self.clock.advance(step)
            elapsed += step
            while len(self.sent) > seen:
                times.append(elapsed)
                seen += 1
        return times


class ClientInviteUDPTests(UDPHarness):
    def test_timer_a_doubles_without_cap_until_timer_b(self) -> None:
        """RFC 3261 §17.1.1.2: Timer A resends the INVITE at T1, 2*T1, 4*T1 ... (no T2 cap);
        Timer B (64*T1) ends it with a timeout."""
        tx = ClientInviteTransaction(request(), **self.kwargs())
        failures: list[object] = []
        tx.start().addErrback(failures.append)
        self.assertEqual(len(self.sent), 1)
        times = self.send_times(64 * T1)
        self.assertEqual(times, [0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
        self.assertTrue(failures[0].check(TransactionTimeout))
        self.assertEqual((tx.state, len(self.timers)), (State.TERMINATED, 0))

    def test_provisional_stops_timer_a(self) -> None:
        """RFC 3261 §17.1.1.2: in Proceeding the client no longer retransmits."""
        req = request()
        tx = ClientInviteTransaction(req, **self.kwargs())
        tx.start()
        self.clock.advance(T1)
        tx.response_received(response(req, 180))
        self.assertEqual(self.send_times(40), [])
        self.assertEqual(tx.state, State.PROCEEDING)

    def test_timer_d_absorbs_final_response_retransmissions(self) -> None:
        """RFC 3261 §17.1.1.2: a 300-699 response is ACKed, the transaction stays Completed
        for Timer D (at least 32 s over UDP) and ACKs every retransmission of it."""
        req = request()
        tx = ClientInviteTransaction(req, **self.kwargs())
        results: list[Response] = []
        tx.start().addCallback(results.append)
        final = response(req, 486)
        tx.response_received(final)
        self.assertEqual(results, [final])
        self.assertEqual((tx.state, self.sent[-1].method), (State.COMPLETED, "ACK"))
        tx.response_received(final)
        self.assertEqual([m.method for m in self.sent], ["INVITE", "ACK", "ACK"])
        self.clock.advance(TIMER_D - 0.1)
        self.assertEqual(tx.state, State.COMPLETED)
        self.clock.advance(0.1)
        self.assertEqual((tx.state, self.terminated, len(self.timers)),
                         (State.TERMINATED, [tx], 0))

    def test_timer_d_zero_over_reliable_transport(self) -> None:
        """RFC 3261 §17.1.1.2: Timer D is zero for reliable transports; no Timer A."""
        req = request()
        tx = ClientInviteTransaction(req, **self.kwargs(reliable=True))
        tx.start()
        self.assertEqual(self.send_times(10), [])
        tx.response_received(response(req, 486))
        self.assertEqual(tx.state, State.TERMINATED)


class ClientNonInviteUDPTests(UDPHarness):
    def test_timer_e_doubles_up_to_t2_until_timer_f(self) -> None:
        """RFC 3261 §17.1.2.2: Timer E resends at T1, 2*T1 ... capped at T2; Timer F = 64*T1."""
        tx = ClientNonInviteTransaction(request("OPTIONS"), **self.kwargs())
        failures: list[object] = []
        tx.start().addErrback(failures.append)
        times = self.send_times(64 * T1)
        self.assertEqual(times[:6], [0.5, 1.5, 3.5, 7.5, 11.5, 15.5])
        self.assertEqual(len(failures), 1)
        self.assertEqual(len(self.timers), 0)

    def test_timer_e_is_t2_in_proceeding(self) -> None:
        """RFC 3261 §17.1.2.2: after a provisional the request is resent every T2."""
        req = request("OPTIONS")
        tx = ClientNonInviteTransaction(req, **self.kwargs())
        tx.start()
        tx.response_received(response(req, 100, to_tag=None))
        times = self.send_times(20)
        self.assertEqual(times, [0.5, 0.5 + T2, 0.5 + 2 * T2, 0.5 + 3 * T2, 0.5 + 4 * T2])

    def test_timer_k_absorbs_then_terminates(self) -> None:
        """RFC 3261 §17.1.2.2: Completed lasts Timer K = T4 over UDP, then Terminated;
        a retransmitted final response is absorbed and retransmissions stop."""
        req = request("OPTIONS")
        tx = ClientNonInviteTransaction(req, **self.kwargs())
        results: list[Response] = []
        tx.start().addCallback(results.append)
        tx.response_received(response(req, 200))
        tx.response_received(response(req, 200))
        self.assertEqual((len(results), tx.state), (1, State.COMPLETED))
        self.assertEqual(self.send_times(T4 - 0.25), [])
        self.assertEqual(tx.state, State.COMPLETED)
        self.clock.advance(0.25)
        self.assertEqual((tx.state, len(self.timers)), (State.TERMINATED, 0))

    def test_timer_k_zero_over_reliable_transport(self) -> None:
        """RFC 3261 §17.1.2.2: Timer K is zero for reliable transports."""
        req = request("OPTIONS")
        tx = ClientNonInviteTransaction(req, **self.kwargs(reliable=True))
        tx.start()
        tx.response_received(response(req, 200))
        self.assertEqual(tx.state, State.TERMINATED)


class ServerInviteUDPTests(UDPHarness):
    def test_timer_g_doubles_to_t2_until_timer_h(self) -> None:
        """RFC 3261 §17.2.1: a 300-699 is resent by Timer G at T1, 2*T1 ... capped at T2
        until the ACK; Timer H (64*T1) gives up."""
        req = request()
        timeouts: list[object] = []
        tx = ServerInviteTransaction(req, on_ack_timeout=timeouts.append, **self.kwargs())
        tx.start()
        tx.respond(response(req, 486))
        times = self.send_times(64 * T1)
        self.assertEqual(times[:6], [0.5, 1.5, 3.5, 7.5, 11.5, 15.5])
        self.assertTrue(all(m.status_code == 486 for m in self.sent[2:]))
        self.assertEqual((timeouts, tx.state, len(self.timers)), ([tx], State.TERMINATED, 0))

    def test_timer_i_absorbs_acks(self) -> None:
        """RFC 3261 §17.2.1: the ACK stops Timer G; Confirmed lasts Timer I = T4 over UDP,
        during which a retransmitted INVITE gets nothing; then Terminated."""
        req = request()
        tx = ServerInviteTransaction(req, **self.kwargs())
        tx.start()
        tx.respond(response(req, 486))
        self.clock.advance(T1)
        sent = len(self.sent)
        tx.ack_received(request("ACK"))
        self.assertEqual(tx.state, State.CONFIRMED)
        tx.ack_received(request("ACK"))
        tx.request_received(req)
        self.assertEqual(self.send_times(T4 - 0.25), [])
        self.assertEqual(len(self.sent), sent)
        self.clock.advance(0.25)
        self.assertEqual((tx.state, len(self.timers)), (State.TERMINATED, 0))

    def test_timer_i_zero_over_reliable_transport(self) -> None:
        """RFC 3261 §17.2.1: Timer I is zero and Timer G unused over reliable transports."""
        req = request()
        tx = ServerInviteTransaction(req, **self.kwargs(reliable=True))
        tx.start()
        tx.respond(response(req, 486))
        self.assertEqual(self.send_times(5), [])
        tx.ack_received(request("ACK"))
        self.assertEqual(tx.state, State.TERMINATED)

    def test_retransmitted_invite_gets_last_provisional(self) -> None:
        """RFC 3261 §17.2.1: in Proceeding a retransmitted INVITE gets the last provisional."""
        req = request()
        tx = ServerInviteTransaction(req, **self.kwargs())
        tx.start()
        tx.respond(response(req, 180))
        tx.request_received(req)
        self.assertEqual([m.status_code for m in self.sent], [100, 180, 180])


class ServerNonInviteUDPTests(UDPHarness):
    def test_timer_j_answers_retransmissions_then_terminates(self) -> None:
        """RFC 3261 §17.2.2: Completed lasts Timer J = 64*T1 over UDP, resending the final
        response for each retransmitted request; then Terminated."""
        req = request("OPTIONS")
        tx = ServerNonInviteTransaction(req, **self.kwargs())
        tx.respond(response(req, 200))
        tx.request_received(req)
        self.assertEqual([m.status_code for m in self.sent], [200, 200])
        self.clock.advance(64 * T1 - 0.1)
        self.assertEqual(tx.state, State.COMPLETED)
        self.clock.advance(0.1)
        self.assertEqual((tx.state, self.terminated, len(self.timers)),
                         (State.TERMINATED, [tx], 0))

    def test_timer_j_zero_over_reliable_transport(self) -> None:
        """RFC 3261 §17.2.2: Timer J is zero for reliable transports."""
        req = request("OPTIONS")
        tx = ServerNonInviteTransaction(req, **self.kwargs(reliable=True))
        tx.respond(response(req, 200))
        self.assertEqual(tx.state, State.TERMINATED)

    def test_lingering_transaction_freed_without_cycle_collector(self) -> None:
        """RFC 3261 §17.2.2: once Timer J ends a UDP transaction, nothing keeps it (nor the
        request and response it held) alive: it is freed by reference counting, not left
        as cyclic garbage (every UDP transaction ends by a timer firing; their garbage
        made the collector's full passes long enough to delay calls by hundreds of ms)."""
        req = request("OPTIONS")
        tx = ServerNonInviteTransaction(req, **self.kwargs())
        tx.respond(response(req, 200))
        alive = weakref.ref(tx)
        del tx
        self.sent.clear()
        enabled = gc.isenabled()
        gc.disable()
        self.addCleanup(lambda: gc.enable() if enabled else None)
        self.clock.advance(64 * T1)
        self.terminated.clear()
        self.assertIsNone(alive())
