"""Tests for voiptwisted.sip.transaction: RFC 3261 §17 state machines on a task.Clock."""

from __future__ import annotations

import gc
import weakref

from twisted.internet import task
from twisted.internet.error import ConnectionLost
from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.sip.message import Message, Request, Response
from voiptwisted.sip.transaction import (
    T1,
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    State,
    Timers,
    TransactionTable,
    TransactionTimeout,
    server_key,
)

BRANCH = "z9hG4bK776asdhds"


def request(
    method: str = "INVITE",
    branch: str = BRANCH,
    cseq: int = 1,
    to_tag: str = "",
    cseq_method: str | None = None,
) -> Request:
    to = "<sip:bob@biloxi.example.com>" + (f";tag={to_tag}" if to_tag else "")
    raw = (
        f"{method} sip:bob@biloxi.example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS pc33.atlanta.example.com;branch={branch}\r\n"
        "Via: SIP/2.0/TLS proxy.example.com;branch=z9hG4bKproxy\r\n"
        "Route: <sip:proxy.example.com;lr>\r\n"
        "Max-Forwards: 70\r\n"
        f"To: {to}\r\n"
        "From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n"
        "Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    message = Message.parse(raw)
    assert isinstance(message, Request)
    return message


def response(req: Request, code: int, to_tag: str | None = "bobtag") -> Response:
    return Response.from_request(req, code, to_tag=to_tag)


class _Target:
    """Something a timer calls, weakly referenceable (to see when it is freed)."""

    def run(self) -> None:
        pass


class TimersTests(SynchronousTestCase):
    def test_tracks_until_fired_or_cancelled(self) -> None:
        clock = task.Clock()
        timers = Timers(clock)
        fired: list[int] = []
        timers.call_later(1, fired.append, 1)
        second = timers.call_later(2, fired.append, 2)
        self.assertEqual(len(timers), 2)
        clock.advance(1)
        self.assertEqual((fired, len(timers)), ([1], 1))
        timers.cancel(second)
        self.assertEqual(len(timers), 0)
        self.assertEqual(clock.getDelayedCalls(), [])
        timers.cancel(second)  # idempotent
        timers.cancel(None)

    def test_fired_timer_leaves_no_reference_cycle(self) -> None:
        """A fired timer's function and arguments are freed by reference counting: Twisted
        keeps a fired call's ``func``, and a closure holding the call made a cycle that
        only the cyclic garbage collector (full passes stalling the reactor) could free."""
        clock = task.Clock()
        timers = Timers(clock)
        target = _Target()
        alive = weakref.ref(target)
        timers.call_later(1, target.run)
        del target
        enabled = gc.isenabled()
        gc.disable()
        self.addCleanup(lambda: gc.enable() if enabled else None)
        clock.advance(1)
        self.assertIsNone(alive())

    def test_cancel_all(self) -> None:
        clock = task.Clock()
        timers = Timers(clock)
        for delay in (1, 2, 3):
            timers.call_later(delay, lambda: None)
        timers.cancel_all()
        self.assertEqual((len(timers), clock.getDelayedCalls()), (0, []))


class Harness(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = task.Clock()
        self.timers = Timers(self.clock)
        self.sent: list[Request | Response] = []
        self.ended: list[object] = []

    def kwargs(self) -> dict[str, object]:
        return {
            "send": self.sent.append,
            "timers": self.timers,
            "on_terminated": self.ended.append,
        }

    def assertClean(self) -> None:
        self.assertEqual(len(self.timers), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ClientNonInviteTests(Harness):
    def test_final_response_fires_and_terminates(self) -> None:
        """RFC 3261 §17.1.2.2: a final response in Trying -> Completed; Timer K = 0 (reliable)."""
        req = request("OPTIONS")
        tx = ClientNonInviteTransaction(req, **self.kwargs())
        d = tx.start()
        self.assertEqual(self.sent, [req])
        self.assertEqual(tx.state, State.TRYING)
        ok = response(req, 200)
        tx.response_received(ok)
        self.assertIs(self.successResultOf(d), ok)
        self.assertEqual(tx.state, State.TERMINATED)
        self.assertEqual(self.ended, [tx])
        self.assertClean()

    def test_timer_f(self) -> None:
        """RFC 3261 §17.1.2.2: Timer F (64*T1) fires in Trying -> TransactionTimeout."""
        tx = ClientNonInviteTransaction(request("BYE"), **self.kwargs())
        d = tx.start()
        self.clock.advance(64 * T1 - 0.01)
        self.assertNoResult(d)
        self.clock.advance(0.01)
        failure = self.failureResultOf(d, TransactionTimeout)
        self.assertEqual(failure.value.timer, "F")
        self.assertTrue(tx.terminated)
        self.assertClean()

    def test_timer_f_runs_in_proceeding(self) -> None:
        """RFC 3261 §17.1.2.2: a 1xx moves to Proceeding; Timer F keeps running there."""
        provisional: list[Response] = []
        req = request("BYE")
        tx = ClientNonInviteTransaction(req, on_provisional=provisional.append, **self.kwargs())
        d = tx.start()
        tx.response_received(response(req, 100, None))
        self.assertEqual(tx.state, State.PROCEEDING)
        self.assertEqual(len(provisional), 1)
        self.clock.advance(64 * T1)
        self.failureResultOf(d, TransactionTimeout)

    def test_abort(self) -> None:
        tx = ClientNonInviteTransaction(request("BYE"), **self.kwargs())
        d = tx.start()
        tx.abort(ConnectionLost())
        self.failureResultOf(d, ConnectionLost)
        self.assertClean()
        tx.abort(ConnectionLost())  # no second errback

    def test_late_response_ignored(self) -> None:
        req = request("BYE")
        tx = ClientNonInviteTransaction(req, **self.kwargs())
        d = tx.start()
        tx.response_received(response(req, 200))
        tx.response_received(response(req, 500))
        self.assertEqual(self.successResultOf(d).status_code, 200)


class ClientInviteTests(Harness):
    def test_timer_b_in_calling(self) -> None:
        """RFC 3261 §17.1.1.2: Timer B = 64*T1 in Calling -> timeout reported to the TU."""
        tx = ClientInviteTransaction(request(), **self.kwargs())
        d = tx.start()
        self.assertEqual(tx.state, State.CALLING)
        self.clock.advance(64 * T1)
        self.assertEqual(self.failureResultOf(d, TransactionTimeout).value.timer, "B")
        self.assertClean()

    def test_provisional_stops_timer_b(self) -> None:
        """RFC 3261 §17.1.1.2: Timer B only runs in Calling; Proceeding waits for the final."""
        req = request()
        tx = ClientInviteTransaction(req, **self.kwargs())
        d = tx.start()
        tx.response_received(response(req, 180))
        self.assertEqual(tx.state, State.PROCEEDING)
        self.assertClean()
        self.clock.advance(1000)
        self.assertNoResult(d)

    def test_cancel_sent_bounds_proceeding(self) -> None:
        """RFC 3261 §9.1: after a CANCEL, give up if no final response within 64*T1."""
        req = request()
        tx = ClientInviteTransaction(req, **self.kwargs())
        d = tx.start()
        tx.response_received(response(req, 180))
        tx.cancel_sent()
        self.clock.advance(64 * T1)
        self.failureResultOf(d, TransactionTimeout)
        self.assertClean()

    def test_2xx_goes_to_tu_without_ack(self) -> None:
        """RFC 3261 §17.1.1.2: a 2xx terminates the transaction; the TU sends the ACK."""
        req = request()
        tx = ClientInviteTransaction(req, **self.kwargs())
        d = tx.start()
        ok = response(req, 200)
        tx.response_received(ok)
        self.assertIs(self.successResultOf(d), ok)
        self.assertEqual(self.sent, [req])
        self.assertTrue(tx.terminated)
        self.assertClean()

    def test_non_2xx_ack_on_invite_branch(self) -> None:
        """RFC 3261 §17.1.1.3: the ACK for a non-2xx final response is built by the transaction.

        Same Request-URI, Call-ID, From, CSeq number (method ACK), the response's To (with
        tag), only the INVITE's top Via (same branch) and its Route headers.  Timer D = 0 on a
        reliable transport, so the transaction terminates at once.
        """
        req = request(cseq=7)
        tx = ClientInviteTransaction(req, **self.kwargs())
        d = tx.start()
        busy = response(req, 486)
        tx.response_received(busy)
        self.assertIs(self.successResultOf(d), busy)
        ack = self.sent[-1]
        assert isinstance(ack, Request)
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(ack.uri, req.uri)
        self.assertEqual(ack.cseq, (7, "ACK"))
        self.assertEqual(len(ack.via), 1)
        self.assertEqual(ack.branch, BRANCH)
        self.assertEqual(ack.remote_tag, "bobtag")
        self.assertEqual(ack.local_tag, "1928301774")
        self.assertEqual(ack.call_id, req.call_id)
        self.assertEqual(ack.headers.getlist("Route"), ["<sip:proxy.example.com;lr>"])
        self.assertTrue(tx.terminated)
        self.assertClean()


class ServerInviteTests(Harness):
    def test_100_trying_at_once(self) -> None:
        """RFC 3261 §17.2.1: the server transaction sends 100 Trying (no To tag, §8.2.6.1)."""
        req = request()
        tx = ServerInviteTransaction(req, **self.kwargs())
        tx.start()
        trying = self.sent[0]
        assert isinstance(trying, Response)
        self.assertEqual(trying.status_code, 100)
        self.assertIsNone(trying.remote_tag)
        self.assertEqual(len(trying.via), 2)
        self.assertEqual(tx.state, State.PROCEEDING)
        self.assertClean()

    def test_retransmitted_invite_gets_last_provisional(self) -> None:
        """RFC 3261 §17.2.1: a retransmitted INVITE in Proceeding gets the last provisional."""
        req = request()
        tx = ServerInviteTransaction(req, **self.kwargs())
        tx.start()
        ringing = response(req, 180)
        tx.respond(ringing)
        tx.request_received(req)
        self.assertIs(self.sent[-1], ringing)

    def test_2xx_terminates(self) -> None:
        """RFC 3261 §17.2.1: a 2xx from the TU terminates the transaction (TU retransmits it)."""
        req = request()
        tx = ServerInviteTransaction(req, **self.kwargs())
        tx.start()
        self.assertTrue(tx.respond(response(req, 200)))
        self.assertTrue(tx.terminated)
        self.assertFalse(tx.respond(response(req, 500)))
        self.assertEqual(self.ended, [tx])
        self.assertClean()

    def test_non_2xx_waits_for_ack(self) -> None:
        """RFC 3261 §17.2.1: 300-699 -> Completed with Timer H; ACK -> Confirmed, Timer I = 0."""
        req = request()
        tx = ServerInviteTransaction(req, **self.kwargs())
        tx.start()
        tx.respond(response(req, 486))
        self.assertEqual(tx.state, State.COMPLETED)
        self.assertEqual(len(self.timers), 1)
        tx.request_received(req)
        self.assertEqual(self.sent[-1].status_code, 486)
        tx.ack_received(request("ACK", to_tag="bobtag", cseq_method="ACK"))
        self.assertTrue(tx.terminated)
        self.assertClean()

    def test_timer_h(self) -> None:
        """RFC 3261 §17.2.1: Timer H (64*T1) without ACK -> Terminated, TU told."""
        timeouts: list[object] = []
        req = request()
        tx = ServerInviteTransaction(req, on_ack_timeout=timeouts.append, **self.kwargs())
        tx.start()
        tx.respond(response(req, 603))
        self.clock.advance(64 * T1 - 0.01)
        self.assertFalse(tx.terminated)
        self.clock.advance(0.01)
        self.assertTrue(tx.terminated)
        self.assertEqual(timeouts, [tx])
        self.assertClean()


class ServerNonInviteTests(Harness):
    def test_final_terminates(self) -> None:
        """RFC 3261 §17.2.2: final response -> Completed; Timer J = 0 on reliable transports."""
        req = request("BYE", to_tag="bobtag")
        tx = ServerNonInviteTransaction(req, **self.kwargs())
        self.assertTrue(tx.respond(response(req, 200)))
        self.assertTrue(tx.terminated)
        self.assertFalse(tx.respond(response(req, 500)))
        self.assertEqual(len(self.sent), 1)
        self.assertClean()

    def test_retransmission_gets_last_response(self) -> None:
        """RFC 3261 §17.2.2: a retransmitted request in Proceeding gets the last provisional."""
        req = request("OPTIONS")
        tx = ServerNonInviteTransaction(req, **self.kwargs())
        tx.request_received(req)
        self.assertEqual(self.sent, [])
        trying = response(req, 100, None)
        tx.respond(trying)
        self.assertEqual(tx.state, State.PROCEEDING)
        tx.request_received(req)
        self.assertEqual(self.sent, [trying, trying])


class TableTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.timers = Timers(task.Clock())
        self.table = TransactionTable()

    def server(self, req: Request) -> ServerInviteTransaction | ServerNonInviteTransaction:
        cls = ServerInviteTransaction if req.method == "INVITE" else ServerNonInviteTransaction
        tx = cls(req, send=lambda m: None, timers=self.timers, on_terminated=self.table.remove)
        self.table.add(tx)
        return tx

    def test_ack_matches_invite_cancel_does_not(self) -> None:
        """RFC 3261 §17.2.3: ACK maps to the INVITE's transaction; CANCEL is its own (§9.2)."""
        invite = self.server(request())
        ack = request("ACK", to_tag="x", cseq_method="ACK")
        cancel = request("CANCEL")
        self.assertIs(self.table.match_request(ack), invite)
        self.assertIsNone(self.table.match_request(cancel))
        self.assertIs(self.table.find_server(server_key(cancel)[0], "INVITE"), invite)
        self.assertEqual(server_key(cancel), (BRANCH, "CANCEL"))

    def test_other_branch_no_match(self) -> None:
        self.server(request())
        self.assertIsNone(self.table.match_request(request(branch="z9hG4bKother")))

    def test_response_matching_by_branch_and_method(self) -> None:
        """RFC 3261 §17.1.3: a response matches on top Via branch and CSeq method."""
        req = request("INVITE")
        tx = ClientInviteTransaction(
            req, send=lambda m: None, timers=self.timers, on_terminated=self.table.remove
        )
        self.table.add(tx)
        self.assertIs(self.table.match_response(response(req, 180)), tx)
        cancel_resp = response(request("CANCEL"), 200)
        self.assertIsNone(self.table.match_response(cancel_resp))
        self.assertEqual(len(self.table), 1)
        tx.start()
        tx.response_received(response(req, 200))
        self.assertEqual(len(self.table), 0)

    def test_rfc2543_branch_fallback(self) -> None:
        """RFC 3261 §17.2.3: requests without the magic cookie match on Call-ID/tag/CSeq."""
        old = self.server(request(branch="oldstyle"))
        self.assertIs(self.table.match_request(request(branch="oldstyle")), old)
        self.assertIsNone(self.table.match_request(request(branch="oldstyle", cseq=2)))

    def test_terminated_transaction_removed(self) -> None:
        req = request("OPTIONS")
        tx = self.server(req)
        self.assertEqual(len(self.table), 1)
        tx.respond(response(req, 200))
        self.assertEqual(len(self.table), 0)
        self.assertEqual(list(self.table), [])
