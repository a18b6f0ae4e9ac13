"""Reliable provisional responses and PRACK (RFC 3262), both roles.

The RSeq/RAck machines of :mod:`voiptwisted.sip.reliable` on a ``task.Clock``; then one
protocol on a StringTransport driven with exact messages (Bob receiving calls, Alice
placing them); then both in memory through ``iosim``.  The media is the fake ``CallMedia``
of :mod:`tests.sip.test_dialog`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_dialog import (
    ANSWER,
    AVP_OFFER,
    FakeSession,
    connect,
    invite_bytes,
    make_media_class,
    make_protocol,
    respond_to,
    written,
)
from voiptwisted.sip.dialog import Dialog
from voiptwisted.sip.message import Request, Response
from voiptwisted.sip.reliable import (
    MAX_EARLY_DIALOGS,
    MAX_QUEUED,
    ProvisionalSequence,
    ReliableProvisionals,
    parse_rack,
    parse_rseq,
    prack_for,
    wants_reliable,
)
from voiptwisted.sip.transaction import T1, Timers

REQUIRE = "Require: 100rel\r\n"


def invite(extra: str = REQUIRE, body: bytes = AVP_OFFER) -> Request:
    return Request.parse(invite_bytes(extra=extra, body=body))


def provisional(request: Request, code: int = 183, body: bytes = b"") -> Response:
    return Response.from_request(request, code, to_tag="bobtag", body=body)


class ParseTests(SynchronousTestCase):
    def test_rseq(self) -> None:
        """RFC 3262 §7.1: RSeq is 1*DIGIT in 1..2**32-1; anything else is unusable."""
        self.assertEqual(parse_rseq(" 4711 "), 4711)
        self.assertEqual(parse_rseq(str(2**32 - 1)), 2**32 - 1)
        for bad in (None, "", "0", "-1", "1.5", "x1", str(2**32), "1" * 11, "\u0661"):
            self.assertIsNone(parse_rseq(bad), bad)

    def test_rack(self) -> None:
        """RFC 3262 §7.2: RAck is response-num, CSeq-num and method."""
        self.assertEqual(parse_rack("776656 1 INVITE"), (776656, 1, "INVITE"))
        self.assertEqual(parse_rack("  5\t2  invite "), (5, 2, "INVITE"))
        for bad in (None, "", "5 1", "5 1 INVITE x", "a 1 INVITE", "5 0 INVITE", "5 1 IN-1"):
            self.assertIsNone(parse_rack(bad), bad)

    def test_policy(self) -> None:
        """RFC 3262 §3: reliable when the INVITE requires 100rel; when it only supports it,
        as our policy says (default: not)."""
        self.assertTrue(wants_reliable(invite(), False))
        self.assertTrue(wants_reliable(invite("Require: outbound, 100REL\r\n"), False))
        supported = invite("Supported: timer, 100rel\r\n")
        self.assertFalse(wants_reliable(supported, False))
        self.assertTrue(wants_reliable(supported, True))
        self.assertTrue(wants_reliable(invite("k: 100rel\r\n"), True))
        self.assertFalse(wants_reliable(invite(""), True))


class SenderTests(SynchronousTestCase):
    """The UAS machine on a task.Clock; *transmit* records what the transaction would send."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.sent: list[tuple[float, int, int]] = []
        self.accepting = True
        self.timeouts = 0
        self.invite = invite()
        self.sender = self.make()

    def make(self) -> ReliableProvisionals:
        def transmit(response: Response) -> bool:
            if self.accepting:
                rseq = int(response.headers["RSeq"])
                self.sent.append((self.clock.seconds(), response.status_code, rseq))
            return self.accepting

        def timed_out() -> None:
            self.timeouts += 1

        return ReliableProvisionals(
            self.invite, timers=Timers(self.clock), t1=T1, transmit=transmit,
            on_timeout=timed_out,
        )

    def test_first_rseq_random(self) -> None:
        """RFC 3262 §3: the first RSeq is chosen randomly in 1..2**31-1."""
        starts = {self.make().next_rseq for _ in range(50)}
        self.assertGreater(len(starts), 40)
        self.assertTrue(all(1 <= n <= 2**31 - 1 for n in starts))

    def test_stamped_and_incremented(self) -> None:
        """RFC 3262 §3 / §7.1: each reliable 18x has Require: 100rel and an RSeq one higher
        than the previous one's."""
        first = provisional(self.invite, 180)
        start = self.sender.next_rseq
        self.sender.send(first)
        self.assertEqual(first.headers["Require"], "100rel")
        self.assertEqual(first.headers["RSeq"], str(start))
        self.assertIsNotNone(self.sender.acknowledge((start, 1, "INVITE")))
        second = provisional(self.invite, 183)
        self.sender.send(second)
        self.assertEqual(second.headers["RSeq"], str(start + 1))

    def test_retransmitted_t1_doubling_then_timeout(self) -> None:
        """RFC 3262 §3: retransmitted at intervals starting at T1 and doubling; after 64*T1
        without PRACK the UAS gives up (the dialog then answers the INVITE 5xx)."""
        self.sender.send(provisional(self.invite))
        for _ in range(64 * 4 + 4):
            self.clock.advance(T1 / 4)
        times = [t / T1 for t, _code, _rseq in self.sent]
        self.assertEqual(times, [0, 1, 3, 7, 15, 31, 63])
        self.assertEqual(self.timeouts, 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_prack_stops_retransmission(self) -> None:
        """RFC 3262 §3: a PRACK matching the RSeq, the INVITE's CSeq number and method ends
        the retransmissions; it matches once."""
        response = provisional(self.invite)
        self.sender.send(response)
        self.clock.advance(T1)
        rack = (int(response.headers["RSeq"]), 1, "INVITE")
        self.assertIs(self.sender.acknowledge(rack), response)
        self.assertIsNone(self.sender.acknowledge(rack))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.sent), 2)

    def test_unmatched_rack(self) -> None:
        """RFC 3262 §3: a PRACK whose RAck matches no unacknowledged reliable 18x (other RSeq,
        CSeq number or method) is not an acknowledgement (the dialog answers it 481)."""
        response = provisional(self.invite)
        self.sender.send(response)
        rseq = int(response.headers["RSeq"])
        for rack in ((rseq + 1, 1, "INVITE"), (rseq, 2, "INVITE"), (rseq, 1, "UPDATE")):
            self.assertIsNone(self.sender.acknowledge(rack), rack)
        self.assertIsNotNone(self.sender.acknowledge((rseq, 1, "INVITE")))

    def test_one_outstanding_at_a_time(self) -> None:
        """RFC 3262 §3: no second reliable 18x before the first is acknowledged; it goes out
        (with the next RSeq) once the PRACK arrives.  The queue is bounded."""
        first = provisional(self.invite, 180)
        self.sender.send(first)
        for _ in range(MAX_QUEUED):
            self.assertTrue(self.sender.send(provisional(self.invite, 183)))
        self.assertFalse(self.sender.send(provisional(self.invite, 183)))
        self.assertEqual([code for _t, code, _r in self.sent], [180])
        self.sender.acknowledge((int(first.headers["RSeq"]), 1, "INVITE"))
        self.assertEqual([code for _t, code, _r in self.sent], [180, 183])
        self.assertEqual(self.sent[1][2], self.sent[0][2] + 1)

    def test_sdp_unacknowledged(self) -> None:
        """RFC 3262 §3: a reliable 18x with SDP, sent or queued and not yet PRACKed, holds
        the 2xx; one without SDP does not."""
        ringing = provisional(self.invite, 180)
        self.sender.send(ringing)
        self.assertFalse(self.sender.sdp_unacknowledged)
        progress = provisional(self.invite, 183, ANSWER)
        self.sender.send(progress)
        self.assertTrue(self.sender.sdp_unacknowledged)
        self.sender.acknowledge((int(ringing.headers["RSeq"]), 1, "INVITE"))
        self.assertTrue(self.sender.sdp_unacknowledged)
        self.sender.acknowledge((int(progress.headers["RSeq"]), 1, "INVITE"))
        self.assertFalse(self.sender.sdp_unacknowledged)

    def test_final_response_stops(self) -> None:
        """RFC 3262 §3: once the transaction has its final response (transmit refuses) no
        more retransmissions and no timeout; a late PRACK still matches."""
        response = provisional(self.invite)
        self.sender.send(response)
        self.accepting = False
        self.clock.advance(T1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.timeouts, 0)
        self.assertIs(self.sender.acknowledge((int(response.headers["RSeq"]), 1, "INVITE")),
                      response)


class SequenceTests(SynchronousTestCase):
    """The UAC machine: which reliable 18x get a PRACK."""

    def response(self, rseq: int | str, tag: str = "bobtag") -> Response:
        response = Response.from_request(invite(""), 183, to_tag=tag)
        response.headers["Require"] = "100rel"
        response.headers["RSeq"] = str(rseq)
        return response

    def test_in_order_only(self) -> None:
        """RFC 3262 §4: the first reliable 18x sets the sequence; a later one is PRACKed only
        when its RSeq is one higher; a retransmission or an out-of-order one is ignored."""
        seq = ProvisionalSequence()
        self.assertEqual(seq.accept(self.response(10)), 10)
        self.assertIsNone(seq.accept(self.response(10)))
        self.assertIsNone(seq.accept(self.response(12)))
        self.assertIsNone(seq.accept(self.response(9)))
        self.assertEqual(seq.accept(self.response(11)), 11)
        self.assertEqual(seq.accept(self.response(12)), 12)
        self.assertIsNone(seq.accept(self.response("x")))

    def test_per_early_dialog(self) -> None:
        """RFC 3262 §4: each early dialog (fork, To tag) has its own sequence; the number of
        forks tracked is bounded."""
        seq = ProvisionalSequence()
        self.assertEqual(seq.accept(self.response(10, "a")), 10)
        self.assertEqual(seq.accept(self.response(500, "b")), 500)
        self.assertEqual(seq.accept(self.response(11, "a")), 11)
        for n in range(MAX_EARLY_DIALOGS - 2):
            self.assertEqual(seq.accept(self.response(1, f"fork{n}")), 1)
        self.assertIsNone(seq.accept(self.response(1, "one-too-many")))
        seq.clear()
        self.assertEqual(seq.accept(self.response(1, "one-too-many")), 1)

    def test_prack_for(self) -> None:
        """RFC 3262 §7.2 / RFC 3261 §12.1.2: the PRACK goes to the 18x's Contact through its
        reversed Record-Route set, in its early dialog, with RAck = RSeq, CSeq number and
        method of the INVITE."""
        request = invite("")
        response = Response.from_request(
            request, 183, to_tag="bobtag",
            headers=[
                ("Record-Route", "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>"),
                ("Contact", "<sip:bob@192.0.2.7:5062;transport=tls>"),
            ],
        )
        prack = prack_for(request, response, 77, 2)
        self.assertEqual(prack.uri, "sip:bob@192.0.2.7:5062;transport=tls")
        self.assertEqual(
            prack.headers.getlist("Route"), ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
        )
        self.assertEqual(prack.headers["RAck"], "77 1 INVITE")
        self.assertEqual(prack.cseq, (2, "PRACK"))
        self.assertEqual(prack.remote_tag, "bobtag")
        self.assertEqual(prack.call_id, request.call_id)


class Callee(Dialog):
    """Answers as ``action`` says: "ring" (180 then 200), "progress" (183 with SDP then 200),
    "progress-only" (183 with SDP, no answer) or "reject-later" (183, nothing more)."""

    action = "ring"
    instances: list[Callee] = []
    hangups = 0

    def call_received(self) -> None:
        type(self).instances.append(self)
        if self.action == "ring":
            self.ringing()
            self.answer(session_class=FakeSession)
        elif self.action == "progress":
            self.session_progress()
            self.answer(session_class=FakeSession)
        elif self.action == "progress-only":
            self.session_progress()

    def hangup_received(self) -> None:
        type(self).hangups += 1


def callee(action: str, **attributes: Any) -> type[Callee]:
    return type("C", (Callee,), {"action": action, "instances": [], "hangups": 0, **attributes})


def prack(tag: str, rseq: int | str, cseq: int = 2, body: bytes = b"", rack_cseq: int = 1,
          branch: str | None = None) -> bytes:
    """A PRACK from Alice in the early dialog with our *tag*."""
    return invite_bytes(
        method="PRACK", cseq=cseq, to_tag=tag, body=body, branch=branch or f"z9hG4bKpr{cseq}",
        extra=f"RAck: {rseq} {rack_cseq} INVITE\r\n",
    )


class UASTests(SynchronousTestCase):
    """Bob receives calls on a StringTransport with a task.Clock."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.media = make_media_class()

    def bob(self, dialog_class: type[Dialog]) -> None:
        self.proto = make_protocol(
            "sip:bob@example.com", self.clock, self.media, dialog_class=dialog_class
        )
        self.transport = connect(self.proto)

    def receive(self, data: bytes) -> list[Any]:
        self.proto.dataReceived(data)
        return written(self.transport)

    def assertNothingLeft(self) -> None:
        self.assertEqual(
            (self.proto.dialog_count, self.proto.transaction_count,
             self.proto.pending_timer_count),
            (0, 0, 0),
        )

    def test_require_100rel_accepted_reliable_180(self) -> None:
        """RFC 3262 §3: an INVITE requiring 100rel is taken (no 420); our 180 goes reliably
        (Require: 100rel, RSeq) and a 180 without SDP does not hold the 200; the PRACK that
        comes after it is still answered 200."""
        cls = callee("ring")
        self.bob(cls)
        trying, ringing, ok = self.receive(invite_bytes(extra=REQUIRE))
        self.assertEqual([m.status_code for m in (trying, ringing, ok)], [100, 180, 200])
        self.assertEqual(ringing.headers["Require"], "100rel")
        self.assertIn("PRACK", ok.headers["Allow"])
        tag = ringing.remote_tag
        [answer] = self.receive(prack(tag, ringing.headers["RSeq"]))
        self.assertEqual((answer.status_code, answer.cseq), (200, (2, "PRACK")))
        self.clock.advance(T1)  # the 200's retransmission only, no 180 any more
        self.assertEqual([m.status_code for m in written(self.transport)], [200])

    def test_supported_only_follows_policy(self) -> None:
        """RFC 3262 §3: with only Supported: 100rel our 18x go unreliably by default, and
        reliably with ``reliable_when_supported``."""
        self.bob(callee("ring"))
        _trying, ringing, _ok = self.receive(invite_bytes(extra="Supported: 100rel\r\n"))
        self.assertIsNone(ringing.headers.get("RSeq"))
        self.bob(callee("ring", reliable_when_supported=True))
        _trying, ringing, _ok = self.receive(
            invite_bytes(extra="Supported: 100rel\r\n", call_id="c2")
        )
        self.assertEqual(ringing.headers["Require"], "100rel")
        self.assertIsNotNone(parse_rseq(ringing.headers["RSeq"]))

    def test_2xx_waits_for_prack_of_sdp_183(self) -> None:
        """RFC 3262 §3 / §5: our answer goes in a reliable 183; the 200 is not sent before
        its PRACK, then carries the same SDP; ACK starts the session."""
        cls = callee("progress")
        self.bob(cls)
        _trying, progress = self.receive(invite_bytes(extra=REQUIRE))
        self.assertEqual((progress.status_code, progress.body), (183, ANSWER))
        self.assertEqual(progress.headers["Require"], "100rel")
        self.clock.advance(T1)
        [again] = written(self.transport)
        self.assertEqual((again.status_code, again.headers["RSeq"]),
                         (183, progress.headers["RSeq"]))
        tag = progress.remote_tag
        answer, ok = self.receive(prack(tag, progress.headers["RSeq"]))
        self.assertEqual((answer.status_code, answer.cseq), (200, (2, "PRACK")))
        self.assertEqual((ok.status_code, ok.cseq, ok.body), (200, (1, "INVITE"), ANSWER))
        self.receive(invite_bytes(method="ACK", branch="z9hG4bKa", body=b"", to_tag=tag))
        [dialog] = cls.instances
        self.assertEqual(dialog.session.started, 1)
        self.assertEqual(len(self.media.created), 1)

    def test_unknown_rack_481(self) -> None:
        """RFC 3262 §3: a PRACK matching no unacknowledged reliable 18x (wrong RSeq, wrong
        CSeq number, no RAck at all) gets 481, and the 18x is still retransmitted."""
        self.bob(callee("progress-only"))
        _trying, progress = self.receive(invite_bytes(extra=REQUIRE))
        tag, rseq = progress.remote_tag, int(progress.headers["RSeq"])
        for n, data in enumerate((
            prack(tag, rseq + 1, cseq=2),
            prack(tag, rseq, cseq=3, rack_cseq=7),
            prack(tag, rseq, cseq=4).replace(b"RAck:", b"X-RAck:"),
        )):
            [response] = self.receive(data)
            self.assertEqual(response.status_code, 481, n)
        self.clock.advance(T1)
        self.assertEqual([m.status_code for m in written(self.transport)], [183])

    def test_no_prack_500_after_64_t1(self) -> None:
        """RFC 3262 §3: a reliable 18x never PRACKed is resent at T1, 2*T1 ... and after
        64*T1 the INVITE is rejected with a 5xx; the call ends and nothing is left."""
        cls = callee("progress")
        self.bob(cls)
        self.receive(invite_bytes(extra=REQUIRE))
        codes: list[int] = []
        for _ in range(64 * 4):
            self.clock.advance(T1 / 4)
            codes += [m.status_code for m in written(self.transport)]
        self.assertEqual(codes, [183] * 6 + [500])
        self.assertEqual(cls.hangups, 1)
        self.assertTrue(self.media.created[0].stopped)
        self.receive(invite_bytes(method="ACK", body=b""))
        self.clock.advance(64 * T1)
        self.assertNothingLeft()

    def test_reject_before_prack(self) -> None:
        """RFC 3262 §3: a non-2xx final response may go before the PRACK; the reliable 18x
        is not resent after it."""
        cls = callee("progress-only")
        self.bob(cls)
        self.receive(invite_bytes(extra=REQUIRE))
        [dialog] = cls.instances
        dialog.reject(486)
        self.assertEqual([m.status_code for m in written(self.transport)], [486])
        self.receive(invite_bytes(method="ACK", body=b""))
        self.clock.advance(64 * T1)
        self.assertEqual(written(self.transport), [])
        self.assertNothingLeft()

    def test_offer_in_183_answer_in_prack(self) -> None:
        """RFC 3262 §5: an INVITE without an offer gets our offer in the reliable 183 and
        the answer comes in the PRACK; the 200 follows it and the ACK needs no SDP."""
        cls = callee("progress")
        self.bob(cls)
        _trying, progress = self.receive(invite_bytes(extra=REQUIRE, body=b""))
        self.assertIn(b"m=audio", progress.body)
        [media] = self.media.created
        answer, ok = self.receive(prack(progress.remote_tag, progress.headers["RSeq"],
                                        body=ANSWER))
        self.assertEqual((answer.status_code, ok.status_code), (200, 200))
        self.assertEqual(media.answer, ANSWER)
        self.receive(invite_bytes(method="ACK", branch="z9hG4bKa", body=b"",
                                  to_tag=progress.remote_tag))
        [dialog] = cls.instances
        self.assertEqual(dialog.session.started, 1)

    def early_session_callee(self) -> type[Callee]:
        class EarlyMedia(Callee):
            def call_received(self) -> None:
                type(self).instances.append(self)
                self.session_progress(session_class=FakeSession, prompt="welcome")

        EarlyMedia.instances = []
        self.bob(EarlyMedia)
        return EarlyMedia

    def test_early_session_runs_from_the_reliable_183(self) -> None:
        """RFC 3960 §3 / RFC 3262 §5: session_progress(session_class=...) starts our
        session (our RTP) as soon as the reliable 183 carries our answer, before any
        PRACK or 2xx; answer() later keeps that session (its class unused), and the ACK
        starts nothing more."""
        cls = self.early_session_callee()
        _trying, progress = self.receive(invite_bytes(extra=REQUIRE))
        self.assertEqual((progress.status_code, progress.body), (183, ANSWER))
        [dialog] = cls.instances
        [media] = self.media.created
        self.assertIsInstance(dialog.session, FakeSession)
        self.assertEqual(dialog.session.started, 1)
        self.assertEqual(dialog.session.kwargs, {"prompt": "welcome"})
        self.assertIs(media.session, dialog.session)
        early = dialog.session
        tag = progress.remote_tag
        self.receive(prack(tag, progress.headers["RSeq"]))
        dialog.answer(session_class=dict)
        [ok] = written(self.transport)
        self.assertEqual(ok.status_code, 200)
        self.receive(invite_bytes(method="ACK", branch="z9hG4bKa", body=b"", to_tag=tag))
        self.assertIs(dialog.session, early)
        self.assertEqual(early.started, 1)

    def test_early_session_with_our_offer_starts_at_the_prack(self) -> None:
        """RFC 3262 §5: our offer in the reliable 183 (the INVITE had none): the early
        session starts when the PRACK brings the answer, not before."""
        cls = self.early_session_callee()
        _trying, progress = self.receive(invite_bytes(extra=REQUIRE, body=b""))
        [dialog] = cls.instances
        self.assertIsNone(dialog.session)
        self.receive(prack(progress.remote_tag, progress.headers["RSeq"], body=ANSWER))
        self.assertEqual(dialog.session.started, 1)

    def test_early_session_stopped_by_cancel(self) -> None:
        """RFC 3261 §9.2: a CANCEL before the answer ends the early session with the call."""
        cls = self.early_session_callee()
        self.receive(invite_bytes(extra=REQUIRE))
        [dialog] = cls.instances
        early = dialog.session
        codes = [m.status_code for m in self.receive(invite_bytes(method="CANCEL", body=b""))]
        self.assertEqual(sorted(codes), [200, 487])
        self.assertEqual(early.stopped, 1)

    def test_offer_in_183_prack_without_answer_488(self) -> None:
        """RFC 3262 §5: the PRACK must answer the offer of the 18x it acknowledges; without
        one the offer/answer failed: the PRACK gets 200, the INVITE 488."""
        cls = callee("progress")
        self.bob(cls)
        _trying, progress = self.receive(invite_bytes(extra=REQUIRE, body=b""))
        answer, final = self.receive(prack(progress.remote_tag, progress.headers["RSeq"]))
        self.assertEqual((answer.status_code, final.status_code), (200, 488))
        self.assertEqual(cls.hangups, 0)

    def test_offer_in_prack_488(self) -> None:
        """RFC 3262 §5: a PRACK may carry a new offer; we take none early: 488.  It still
        acknowledges the 183 (no more retransmissions) and the 200 waiting for it goes."""
        self.bob(callee("progress"))
        _trying, progress = self.receive(invite_bytes(extra=REQUIRE))
        response, ok = self.receive(
            prack(progress.remote_tag, progress.headers["RSeq"], body=AVP_OFFER)
        )
        self.assertEqual((response.status_code, ok.status_code), (488, 200))
        self.assertEqual(ok.cseq, (1, "INVITE"))

    def test_unreliable_183_with_sdp(self) -> None:
        """RFC 3960: without 100rel ``session_progress`` sends an unreliable 183 with our
        answer; the 200 follows at once with the same SDP."""
        self.bob(callee("progress"))
        _trying, progress, ok = self.receive(invite_bytes())
        self.assertEqual((progress.status_code, progress.body), (183, ANSWER))
        self.assertIsNone(progress.headers.get("RSeq"))
        self.assertEqual((ok.status_code, ok.body), (200, ANSWER))

    def test_prack_outside_dialog_481(self) -> None:
        """RFC 3262 §3 / RFC 3261 §12.2.2: a PRACK for no dialog of ours gets 481."""
        self.bob(callee("ring"))
        [response] = self.receive(prack("nosuchtag", 5))
        self.assertEqual(response.status_code, 481)


class UACTests(SynchronousTestCase):
    """Alice calls on a StringTransport; the test plays Bob's responses."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.media = make_media_class()
        self.proto = make_protocol("sip:alice@example.com", self.clock, self.media)
        self.transport = connect(self.proto, 5090)
        self.dialog = Dialog(sip=self.proto)
        self.progress: list[int] = []
        self.dialog.progress_received = self.progress.append  # type: ignore[method-assign]
        self.d = self.dialog.dial("sip:bob@example.com", session_class=FakeSession)
        [self.invite] = written(self.transport)

    def reliable(self, rseq: int, code: int = 183, body: bytes = b"", tag: str = "bobtag"
                 ) -> list[Any]:
        headers = [
            ("Require", "100rel"), ("RSeq", str(rseq)),
            ("Contact", "<sip:bob@127.0.0.1:5088;transport=tls>"),
            ("Record-Route", "<sip:proxy.example.com;lr>"),
        ]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        self.proto.dataReceived(respond_to(self.invite, code, to_tag=tag, body=body,
                                           headers=headers))
        return written(self.transport)

    def test_supported_100rel(self) -> None:
        """RFC 3262 §4: our INVITE lists 100rel in Supported, and PRACK in Allow."""
        self.assertIn("100rel", self.invite.headers.getlist("Supported"))
        self.assertIn("PRACK", self.invite.headers.getlist("Allow"))

    def test_prack_and_early_media(self) -> None:
        """RFC 3262 §4 / §7.2: a reliable 183 with SDP is PRACKed (RAck = RSeq, CSeq number
        and method of the INVITE; sent in its early dialog) and starts early media."""
        [prack_request] = self.reliable(4000, body=ANSWER)
        self.assertEqual(prack_request.method, "PRACK")
        self.assertEqual(prack_request.headers["RAck"], "4000 1 INVITE")
        self.assertEqual(prack_request.cseq, (2, "PRACK"))
        self.assertEqual(prack_request.uri, "sip:bob@127.0.0.1:5088;transport=tls")
        self.assertEqual(prack_request.headers["Route"], "<sip:proxy.example.com;lr>")
        self.assertEqual(prack_request.remote_tag, "bobtag")
        self.assertEqual(self.progress, [183])
        self.assertEqual(self.dialog.session.started, 1)
        self.proto.dataReceived(respond_to(prack_request, 200))
        self.proto.dataReceived(respond_to(self.invite, 200, body=ANSWER))
        self.assertIs(self.successResultOf(self.d), self.dialog)
        [ack] = written(self.transport)
        self.assertEqual(ack.cseq, (1, "ACK"))

    def test_retransmission_and_out_of_order_ignored(self) -> None:
        """RFC 3262 §4: a retransmitted reliable 18x (same RSeq) and one whose RSeq is not
        one higher are neither PRACKed nor processed; the next in order is."""
        self.assertEqual(len(self.reliable(7, code=180)), 1)
        self.assertEqual(self.reliable(7, code=180), [])
        self.assertEqual(self.reliable(9, code=183), [])
        [second] = self.reliable(8, code=183)
        self.assertEqual((second.headers["RAck"], second.cseq), ("8 1 INVITE", (3, "PRACK")))
        self.assertEqual(self.progress, [180, 183])

    def test_unreliable_18x_not_pracked(self) -> None:
        """RFC 3262 §4: an 18x without Require: 100rel gets no PRACK."""
        self.proto.dataReceived(respond_to(self.invite, 180))
        self.assertEqual(written(self.transport), [])
        self.assertEqual(self.progress, [180])


class InMemoryTests(SynchronousTestCase):
    """Alice (our UAC) calls Bob (our UAS, reliable when supported) through iosim."""

    def test_both_roles(self) -> None:
        """RFC 3262 §3-§5 end to end: Alice's INVITE supports 100rel, Bob's policy makes his
        183 with SDP reliable, Alice PRACKs it and hears early media, Bob's 200 follows
        the PRACK, the call is up and, after BYE, nothing is left on either side."""
        clock = task.Clock()
        media = make_media_class()
        cls = callee("progress", reliable_when_supported=True)
        alice, bob, pump = iosim.connectedServerAndClient(
            lambda: make_protocol("sip:bob@example.com", clock, media, dialog_class=cls),
            lambda: make_protocol("sip:alice@example.com", clock, media),
            clock=clock,
        )
        dialog = Dialog(sip=alice)
        progress: list[int] = []
        dialog.progress_received = progress.append  # type: ignore[method-assign]
        d = dialog.dial("sip:bob@example.com", session_class=FakeSession)
        pump.flush()
        self.assertIs(self.successResultOf(d), dialog)
        self.assertEqual(progress, [183])
        [callee_dialog] = cls.instances
        self.assertIsNone(callee_dialog._reliable.pending)  # PRACKed
        self.assertEqual(callee_dialog.session.started, 1)
        bye = dialog.bye()
        pump.flush()
        self.successResultOf(bye)
        clock.advance(64 * T1)
        pump.flush()
        for proto in (alice, bob):
            self.assertEqual(
                (proto.dialog_count, proto.transaction_count, proto.pending_timer_count),
                (0, 0, 0),
            )
