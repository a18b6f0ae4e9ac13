"""Session timers (RFC 4028): parsing, negotiation, and every timer on a ``task.Clock``.

The negotiation is :class:`~voiptwisted.sip.session_timer.SessionTimer` (no I/O, no
clock); the dialog schedules what it says.  Dialog tests run one protocol on a
StringTransport with the fake ``CallMedia`` of :mod:`tests.sip.test_dialog` (with
``refresh_offer``, as the real one has), so each message and timer is exact.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_dialog import (
    ANSWER,
    CONFIG,
    CallPair,
    FakeSession,
    callee_class,
    connect,
    invite_bytes,
    make_protocol,
    respond_to,
    written,
)
from tests.sip.test_flow_recovery import refreshable_media_class
from voiptwisted.sip.dialog import CallFailed, Dialog, DialogState
from voiptwisted.sip.headers import SIPParseError
from voiptwisted.sip.message import Message, Request, Response
from voiptwisted.sip.session_timer import (
    MIN_SE,
    SessionExpires,
    SessionTimer,
    parse_min_se,
    parse_session_expires,
    session_interval_too_small,
)

#: A peer that supports timers and allows UPDATE.
TIMER_PEER = "Supported: timer\r\nAllow: INVITE, ACK, BYE, CANCEL, UPDATE\r\n"


def request(extra: str, method: str = "INVITE") -> Request:
    """A request from Alice with the *extra* header lines."""
    message = Message.parse(invite_bytes(method=method, extra=extra, body=b""))
    assert isinstance(message, Request)
    return message


def response(headers: list[tuple[str, str]]) -> Response:
    """A 2xx to an INVITE with *headers*."""
    invite = request("")
    return Response.from_request(invite, 200, headers=headers, to_tag="x")


class ParseTests(SynchronousTestCase):
    """RFC 4028 §4 / §5 grammar, parsed in one split and a linear parameter match."""

    def test_session_expires(self) -> None:
        """RFC 4028 §4: ``delta-seconds *(SEMI se-params)``, refresher ``uac``/``uas``."""
        self.assertEqual(parse_session_expires("1800"), SessionExpires(1800, None))
        self.assertEqual(parse_session_expires("90;refresher=uac"), SessionExpires(90, "uac"))
        self.assertEqual(
            parse_session_expires(" 120 ; refresher = UAS ;x=1"), SessionExpires(120, "uas")
        )
        for bad in ("", "abc", "-1", "1e3", "1800;refresher=both", "1800;;", "9" * 30):
            self.assertRaises(SIPParseError, parse_session_expires, bad)

    def test_min_se(self) -> None:
        """RFC 4028 §5: ``delta-seconds *(SEMI generic-param)``."""
        self.assertEqual(parse_min_se("90"), 90)
        self.assertEqual(parse_min_se("120;foo=bar"), 120)
        for bad in ("", "x", "90 90"):
            self.assertRaises(SIPParseError, parse_min_se, bad)

    def test_bounded(self) -> None:
        """Nothing remote is unbounded: thousands of parameters are refused, not parsed."""
        self.assertRaises(SIPParseError, parse_session_expires, "90" + ";a=b" * 10_000)
        self.assertRaises(SIPParseError, parse_min_se, "90" + ";" * 10_000)


class NegotiationTests(SynchronousTestCase):
    """:class:`SessionTimer` alone: the headers and the agreed interval and refresher."""

    def test_first_request(self) -> None:
        """RFC 4028 §7.1: our INVITE asks for our interval, no refresher, with Min-SE."""
        self.assertEqual(
            SessionTimer().request_headers(), [("Session-Expires", "1800"), ("Min-SE", "90")]
        )
        self.assertRaises(ValueError, SessionTimer, MIN_SE - 1)

    def test_refresh_request_names_refresher(self) -> None:
        """RFC 4028 §7.4: a refresh keeps the interval and names the refresher from the
        sender's view (``uac`` when we refresh)."""
        timer = SessionTimer()
        timer.answered(response([("Session-Expires", "600;refresher=uac")]))
        self.assertEqual(timer.request_headers()[0], ("Session-Expires", "600;refresher=uac"))
        timer.answered(response([("Session-Expires", "600;refresher=uas")]))
        self.assertEqual(timer.request_headers()[0], ("Session-Expires", "600;refresher=uas"))

    def test_answer_keeps_requested_refresher(self) -> None:
        """RFC 4028 §9: the 2xx copies the interval and the refresher asked for, with
        Require: timer (MUST for refresher=uac)."""
        timer = SessionTimer()
        asked = request("Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n")
        headers = timer.answer(asked)
        self.assertEqual(
            headers, [("Session-Expires", "90;refresher=uac"), ("Require", "timer")]
        )
        self.assertEqual((timer.interval, timer.we_refresh), (90, False))

    def test_answer_chooses_us_when_unnamed(self) -> None:
        """RFC 4028 §9: no refresher in the request: the answerer picks, and we pick us."""
        timer = SessionTimer()
        headers = timer.answer(request("Supported: timer\r\nSession-Expires: 600\r\n"))
        self.assertEqual(headers[0], ("Session-Expires", "600;refresher=uas"))
        self.assertTrue(timer.we_refresh)

    def test_answer_peer_without_timer_support(self) -> None:
        """RFC 4028 §9: a request without ``timer`` in Supported: the refresher MUST be the
        UAS (us) and no Require: timer goes back; without Session-Expires we ask for ours."""
        timer = SessionTimer()
        self.assertEqual(
            timer.answer(request("Session-Expires: 600;refresher=uac\r\n")),
            [("Session-Expires", "600;refresher=uas")],
        )
        self.assertTrue(timer.we_refresh)
        timer = SessionTimer()
        self.assertEqual(timer.answer(request("")), [("Session-Expires", "1800;refresher=uas")])

    def test_answer_reduces_but_never_below_min_se(self) -> None:
        """RFC 4028 §9: the UAS MAY reduce the interval (to ours), MUST NOT raise it nor go
        below the request's Min-SE."""
        timer = SessionTimer()
        timer.answer(request("Supported: timer\r\nSession-Expires: 7200\r\n"))
        self.assertEqual(timer.interval, 1800)
        timer = SessionTimer()
        timer.answer(request("Supported: timer\r\nSession-Expires: 7200\r\nMin-SE: 3600\r\n"))
        self.assertEqual(timer.interval, 3600)
        timer = SessionTimer()
        timer.answer(request("Supported: timer\r\nSession-Expires: 100\r\n"))
        self.assertEqual(timer.interval, 100)

    def test_too_small(self) -> None:
        """RFC 4028 §9 / §6: a Session-Expires below our Min-SE (90 s) gets 422 with it."""
        self.assertEqual(session_interval_too_small(request("Session-Expires: 89\r\n")), 90)
        self.assertIsNone(session_interval_too_small(request("Session-Expires: 90\r\n")))
        self.assertIsNone(session_interval_too_small(request("")))
        self.assertRaises(
            SIPParseError, session_interval_too_small, request("Session-Expires: soon\r\n")
        )

    def test_2xx_without_session_expires(self) -> None:
        """RFC 4028 §7.2: we asked, the 2xx has no Session-Expires (the UAS does not do
        timers): we refresh, at the interval we asked for."""
        timer = SessionTimer(600)
        timer.answered(response([]))
        self.assertEqual((timer.interval, timer.we_refresh, timer.refresh_after), (600, True, 300))

    def test_2xx_interval_below_min_se_raised(self) -> None:
        """A 2xx must not go below Min-SE (RFC 4028 §9); one that does cannot make us refresh
        every second: the interval is raised to 90 s."""
        timer = SessionTimer()
        timer.answered(response([("Session-Expires", "2;refresher=uac")]))
        self.assertEqual(timer.interval, MIN_SE)

    def test_expiry_before_the_interval_ends(self) -> None:
        """RFC 4028 §10: the non-refresher's BYE goes min(32, interval/3) s early."""
        timer = SessionTimer()
        timer.answered(response([("Session-Expires", "90;refresher=uas")]))
        self.assertEqual((timer.refresh_after, timer.expires_after), (None, 60))
        timer.answered(response([("Session-Expires", "1800;refresher=uas")]))
        self.assertEqual(timer.expires_after, 1768)

    def test_422_once(self) -> None:
        """RFC 4028 §7.4: after a 422 the interval becomes its Min-SE (and Min-SE too);
        only once, and only upwards."""
        timer = SessionTimer(100)
        too_small = Response.from_request(request(""), 422, headers=[("Min-SE", "120")])
        self.assertTrue(timer.retry_after_422(too_small))
        self.assertEqual(
            timer.request_headers(), [("Session-Expires", "120"), ("Min-SE", "120")]
        )
        self.assertFalse(timer.retry_after_422(too_small))
        for value in ("100", "soon"):
            lower = Response.from_request(request(""), 422, headers=[("Min-SE", value)])
            self.assertFalse(SessionTimer(100).retry_after_422(lower))
        self.assertFalse(SessionTimer().retry_after_422(Response.from_request(request(""), 422)))


class UASTests(SynchronousTestCase):
    """Bob answers Alice's INVITE; the session timer runs on the clock."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.media = refreshable_media_class()
        self.callee = callee_class("answer")
        self.bob = make_protocol(
            "sip:bob@example.com", self.clock, self.media, dialog_class=self.callee
        )
        self.transport = connect(self.bob)

    def establish(self, extra: str) -> tuple[Any, Response]:
        self.bob.dataReceived(invite_bytes(extra=extra))
        ok = written(self.transport)[-1]
        self.assertEqual(ok.status_code, 200)
        self.bob.dataReceived(
            invite_bytes(method="ACK", branch="z9hG4bKack", body=b"", to_tag=ok.remote_tag)
        )
        [callee] = self.callee.instances
        return callee, ok

    def advance_to(self, seconds: float) -> list[Any]:
        """Advance the clock to *seconds* after now; what Bob sent meanwhile."""
        self.clock.advance(seconds)
        return written(self.transport)

    def test_supported_timer_in_2xx_and_require_accepted(self) -> None:
        """RFC 4028 §9 / issue 11: ``Require: timer`` is accepted (no 420); the 2xx has
        Supported: timer, the agreed Session-Expires and Require: timer."""
        _, ok = self.establish("Require: timer\r\nSupported: timer\r\nSession-Expires: 600\r\n")
        self.assertIn("timer", ok.headers.getlist("Supported"))
        self.assertEqual(ok.headers["Session-Expires"], "600;refresher=uas")
        self.assertEqual(ok.headers["Require"], "timer")

    def test_we_refresh_at_half_by_update(self) -> None:
        """RFC 4028 §10: as refresher we refresh at half the interval, by UPDATE when the
        peer's Allow lists it (RFC 3311), naming ourselves refresher (§7.4), and each 2xx
        starts the interval over."""
        callee, _ = self.establish(TIMER_PEER + "Session-Expires: 90\r\n")
        self.assertEqual(self.advance_to(44.9), [])
        [update] = self.advance_to(0.1)
        self.assertEqual(update.method, "UPDATE")
        self.assertEqual(update.body, b"")
        self.assertEqual(update.headers["Session-Expires"], "90;refresher=uac")
        self.assertEqual(update.headers["Min-SE"], "90")
        self.assertIn("timer", update.headers.getlist("Supported"))
        self.bob.dataReceived(respond_to(update, 200, to_tag="alicetag", headers=[
            ("Session-Expires", "90;refresher=uac"), ("Require", "timer")]))
        self.assertEqual(self.advance_to(44.9), [])
        [again] = self.advance_to(0.1)
        self.assertEqual((again.method, again.cseq[0]), ("UPDATE", update.cseq[0] + 1))
        self.assertIs(callee.state, DialogState.CONFIRMED)
        self.assertEqual(self.media.refresh_offers, 0)

    def test_we_refresh_by_reinvite_without_update(self) -> None:
        """RFC 4028 §10: a peer whose Allow has no UPDATE is refreshed by re-INVITE with
        our SDP unchanged (same ``o=`` version, RFC 3264 §8); the 2xx is ACKed."""
        self.establish("Supported: timer\r\nSession-Expires: 120\r\n")
        [reinvite] = self.advance_to(60)
        self.assertEqual(reinvite.method, "INVITE")
        self.assertEqual(reinvite.body, ANSWER)  # what our 200 carried
        self.assertEqual(self.media.refresh_offers, 1)
        self.assertEqual(reinvite.headers["Session-Expires"], "120;refresher=uac")
        self.bob.dataReceived(respond_to(
            reinvite, 200, to_tag="alicetag", body=ANSWER,
            headers=[("Content-Type", "application/sdp")],
        ))
        [ack] = written(self.transport)
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(self.advance_to(59.9), [])
        [again] = self.advance_to(0.1)
        self.assertEqual(again.method, "INVITE")

    def test_peer_without_timer_support_we_refresh(self) -> None:
        """RFC 4028 §9: an INVITE without Supported: timer and without Session-Expires: the
        2xx asks for our interval with refresher=uas (no Require: timer) and we refresh."""
        _, ok = self.establish("")
        self.assertEqual(ok.headers["Session-Expires"], "1800;refresher=uas")
        self.assertNotIn("Require", ok.headers)
        self.assertEqual(self.advance_to(899), [])
        [reinvite] = self.advance_to(1)
        self.assertEqual(reinvite.method, "INVITE")

    def test_unrefreshed_session_expires_with_bye(self) -> None:
        """RFC 4028 §10: the peer refreshes (refresher=uac) and does not: we send BYE
        min(32, interval/3) s before the interval ends, and the application hears of it."""
        callee, ok = self.establish(TIMER_PEER + "Session-Expires: 90;refresher=uac\r\n")
        self.assertEqual(ok.headers["Session-Expires"], "90;refresher=uac")
        self.assertEqual(self.advance_to(59.9), [])
        [bye] = self.advance_to(0.1)
        self.assertEqual(bye.method, "BYE")
        self.assertEqual(self.callee.hangups, 1)
        self.bob.dataReceived(respond_to(bye, 200, to_tag="alicetag"))
        self.assertIs(callee.state, DialogState.TERMINATED)
        self.assertEqual((self.bob.dialog_count, self.bob.pending_timer_count), (0, 0))

    def test_peer_refreshes_restart_the_timer(self) -> None:
        """RFC 4028 §10: each refresh the peer sends (UPDATE or re-INVITE) answered 2xx
        starts the interval over; its 2xx carries the agreed Session-Expires (§9)."""
        callee, ok = self.establish(TIMER_PEER + "Session-Expires: 90;refresher=uac\r\n")
        tag = ok.remote_tag
        self.clock.advance(50)
        self.bob.dataReceived(invite_bytes(
            method="UPDATE", cseq=2, branch="z9hG4bKup", body=b"", to_tag=tag,
            extra="Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n",
        ))
        [update_ok] = written(self.transport)
        self.assertEqual(update_ok.status_code, 200)
        self.assertEqual(update_ok.headers["Session-Expires"], "90;refresher=uac")
        self.assertEqual(self.advance_to(59.9), [])
        self.bob.dataReceived(invite_bytes(
            method="INVITE", cseq=3, branch="z9hG4bKre", to_tag=tag,
            extra="Supported: timer\r\nSession-Expires: 90;refresher=uac\r\n",
        ))
        *_, reinvite_ok = written(self.transport)
        self.assertEqual(reinvite_ok.status_code, 200)
        self.assertEqual(reinvite_ok.headers["Session-Expires"], "90;refresher=uac")
        self.bob.dataReceived(invite_bytes(
            method="ACK", cseq=3, branch="z9hG4bKack3", body=b"", to_tag=tag
        ))
        self.assertEqual(self.advance_to(59.9), [])
        [bye] = self.advance_to(0.1)
        self.assertEqual(bye.method, "BYE")
        self.assertIs(callee.state, DialogState.CONFIRMED)  # until the BYE is answered

    def test_refresh_may_hand_the_refresher_role_over(self) -> None:
        """RFC 4028 §9: a refresh naming refresher=uas (us) makes us the refresher."""
        _, ok = self.establish(TIMER_PEER + "Session-Expires: 90;refresher=uac\r\n")
        self.bob.dataReceived(invite_bytes(
            method="UPDATE", cseq=2, branch="z9hG4bKup", body=b"", to_tag=ok.remote_tag,
            extra="Supported: timer\r\nSession-Expires: 90;refresher=uas\r\n",
        ))
        self.assertEqual(written(self.transport)[0].status_code, 200)
        [update] = self.advance_to(45)
        self.assertEqual(update.method, "UPDATE")

    def test_422_to_small_intervals(self) -> None:
        """RFC 4028 §9 / §6: an INVITE, UPDATE or re-INVITE asking for less than 90 s gets
        422 Session Interval Too Small with Min-SE: 90; the INVITE makes no call."""
        self.bob.dataReceived(invite_bytes(
            call_id="small@example.com", branch="z9hG4bKsmall",
            extra="Supported: timer\r\nSession-Expires: 60\r\n",
        ))
        *_, refused = written(self.transport)
        self.assertEqual((refused.status_code, refused.headers["Min-SE"]), (422, "90"))
        self.assertEqual(refused.phrase, "Session Interval Too Small")
        self.assertEqual(self.bob.dialog_count, 0)
        _, ok = self.establish(TIMER_PEER + "Session-Expires: 90\r\n")
        self.bob.dataReceived(invite_bytes(
            method="UPDATE", cseq=2, branch="z9hG4bKup", body=b"", to_tag=ok.remote_tag,
            extra="Supported: timer\r\nSession-Expires: 30\r\n",
        ))
        self.bob.dataReceived(invite_bytes(
            cseq=3, branch="z9hG4bKre", to_tag=ok.remote_tag,
            extra="Supported: timer\r\nSession-Expires: 1\r\n",
        ))
        self.assertEqual(
            [(m.status_code, m.headers["Min-SE"])
             for m in written(self.transport) if m.status_code != 100],
            [(422, "90"), (422, "90")],
        )

    def test_malformed_session_expires_400(self) -> None:
        """A Session-Expires that does not parse is a bad request (RFC 3261 §21.4.1)."""
        self.bob.dataReceived(invite_bytes(extra="Session-Expires: 90;refresher=me\r\n"))
        *_, refused = written(self.transport)
        self.assertEqual(refused.status_code, 400)
        self.assertEqual(self.bob.dialog_count, 0)


class UACTests(SynchronousTestCase):
    """Alice dials; the answers are written by the test."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.media = refreshable_media_class()
        self.alice = make_protocol("sip:alice@example.com", self.clock, self.media)
        self.transport = connect(self.alice, 5090)
        self.hangups = 0

    def dial(self) -> tuple[Dialog, Any, Request]:
        test = self

        class Caller(Dialog):
            def hangup_received(self) -> None:
                test.hangups += 1

        dialog = Caller(sip=self.alice)
        d = dialog.dial("sip:bob@example.com", session_class=FakeSession)
        [invite] = written(self.transport)
        return dialog, d, invite

    def answer(self, invite: Request, headers: list[tuple[str, str]]) -> None:
        self.alice.dataReceived(respond_to(invite, 200, body=ANSWER, headers=[
            ("Content-Type", "application/sdp"), *headers]))
        [ack] = written(self.transport)
        self.assertEqual(ack.method, "ACK")

    def test_invite_asks_for_a_session_timer(self) -> None:
        """RFC 4028 §7.1: Supported: timer, our Session-Expires (no refresher) and Min-SE."""
        _, _, invite = self.dial()
        self.assertIn("timer", invite.headers.getlist("Supported"))
        self.assertEqual(invite.headers["Session-Expires"], "1800")
        self.assertEqual(invite.headers["Min-SE"], "90")

    def test_configured_interval(self) -> None:
        """The interval asked for is the media config's ``session_expires``."""
        config = type(CONFIG)(**vars(CONFIG), session_expires=300)
        self.alice.media_config = config
        _, _, invite = self.dial()
        self.assertEqual(invite.headers["Session-Expires"], "300")

    def test_422_retried_once_with_min_se(self) -> None:
        """RFC 4028 §7.4: a 422 is answered by the same INVITE with the next CSeq asking for
        the 422's Min-SE (Session-Expires and Min-SE both); a second 422 fails the call."""
        dialog, d, invite = self.dial()
        self.alice.dataReceived(respond_to(invite, 422, headers=[("Min-SE", "3600")]))
        [ack, retry] = written(self.transport)
        self.assertEqual(ack.method, "ACK")
        self.assertEqual((retry.method, retry.cseq), ("INVITE", (invite.cseq[0] + 1, "INVITE")))
        self.assertEqual(retry.call_id, invite.call_id)
        self.assertEqual(retry.local_tag, invite.local_tag)
        self.assertEqual(retry.headers["Session-Expires"], "3600")
        self.assertEqual(retry.headers["Min-SE"], "3600")
        self.assertNoResult(d)
        self.alice.dataReceived(respond_to(retry, 422, headers=[("Min-SE", "7200")]))
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 422)
        self.assertIs(dialog.state, DialogState.TERMINATED)

    def test_we_refresh_when_2xx_says_uac(self) -> None:
        """RFC 4028 §7.2: refresher=uac in the 2xx: we refresh at half its interval, by
        UPDATE since its Allow lists it."""
        _, d, invite = self.dial()
        self.answer(invite, [("Session-Expires", "120;refresher=uac"), ("Require", "timer"),
                             ("Allow", "INVITE, ACK, BYE, UPDATE")])
        self.successResultOf(d)
        self.clock.advance(59.9)
        self.assertEqual(written(self.transport), [])
        self.clock.advance(0.1)
        [update] = written(self.transport)
        self.assertEqual(update.method, "UPDATE")
        self.assertEqual(update.headers["Session-Expires"], "120;refresher=uac")

    def test_2xx_without_session_expires_we_refresh(self) -> None:
        """RFC 4028 §7.2: no Session-Expires in the 2xx: we refresh at half the interval we
        asked for, by re-INVITE with our SDP unchanged (no UPDATE in its Allow)."""
        dialog, d, invite = self.dial()
        self.answer(invite, [])
        self.successResultOf(d)
        self.clock.advance(899)
        self.assertEqual(written(self.transport), [])
        self.clock.advance(1)
        [reinvite] = written(self.transport)
        self.assertEqual(reinvite.method, "INVITE")
        self.assertEqual(reinvite.body, dialog.media.local_sdp)
        self.assertEqual(reinvite.body, invite.body)

    def test_peer_refresher_expiry_bye(self) -> None:
        """RFC 4028 §10: refresher=uas in the 2xx and no refresh: BYE at 90 - 30 s."""
        dialog, d, invite = self.dial()
        self.answer(invite, [("Session-Expires", "90;refresher=uas"), ("Require", "timer")])
        self.successResultOf(d)
        self.clock.advance(59.9)
        self.assertEqual(written(self.transport), [])
        self.clock.advance(0.1)
        [bye] = written(self.transport)
        self.assertEqual(bye.method, "BYE")
        self.assertEqual(self.hangups, 1)
        ended = dialog.when_ended()
        self.alice.dataReceived(respond_to(bye, 200, to_tag=None))
        self.successResultOf(ended)

    def test_refresh_answered_481_ends_call(self) -> None:
        """RFC 4028 §10: a refresh answered 481 (or 408) ends the call with BYE."""
        _, _, invite = self.dial()
        self.answer(invite, [("Session-Expires", "90;refresher=uac"),
                             ("Allow", "INVITE, ACK, BYE, UPDATE")])
        self.clock.advance(45)
        [update] = written(self.transport)
        self.alice.dataReceived(respond_to(update, 481, to_tag=None))
        [bye] = written(self.transport)
        self.assertEqual(bye.method, "BYE")

    def test_refresh_answered_422_retried_higher(self) -> None:
        """RFC 4028 §7.4: a 422 to our refresh: the refresh again, with the 422's Min-SE."""
        dialog, _, invite = self.dial()
        self.answer(invite, [("Session-Expires", "90;refresher=uac"),
                             ("Allow", "INVITE, ACK, BYE, UPDATE")])
        self.clock.advance(45)
        [update] = written(self.transport)
        self.alice.dataReceived(respond_to(update, 422, to_tag=None, headers=[("Min-SE", "300")]))
        [retry] = written(self.transport)
        self.assertEqual(retry.method, "UPDATE")
        self.assertEqual(retry.headers["Session-Expires"], "300;refresher=uac")
        self.assertEqual(retry.headers["Min-SE"], "300")
        self.alice.dataReceived(respond_to(retry, 200, to_tag=None, headers=[
            ("Session-Expires", "300;refresher=uac")]))
        self.clock.advance(149.9)
        self.assertEqual(written(self.transport), [])
        self.clock.advance(0.1)
        self.assertEqual([m.method for m in written(self.transport)], ["UPDATE"])
        self.assertIs(dialog.state, DialogState.CONFIRMED)

    def test_refresh_update_refused_405_falls_back_to_reinvite(self) -> None:
        """RFC 4028 §7.4 / §9 (a refresh is a re-INVITE or an UPDATE): a peer whose Allow
        lists UPDATE but answers our UPDATE refresh 405 (or 501) is refreshed by re-INVITE
        with our SDP unchanged at once and from then on; the call stays up."""
        for code in (405, 501):
            dialog, _, invite = self.dial()
            self.answer(invite, [("Session-Expires", "90;refresher=uac"),
                                 ("Allow", "INVITE, ACK, BYE, UPDATE")])
            self.clock.advance(45)
            [update] = written(self.transport)
            self.assertEqual(update.method, "UPDATE")
            self.alice.dataReceived(respond_to(update, code, to_tag=None))
            [reinvite] = written(self.transport)
            self.assertEqual(reinvite.method, "INVITE")
            self.assertEqual(reinvite.cseq[0], update.cseq[0] + 1)
            self.assertEqual(reinvite.body, dialog.media.local_sdp)
            self.assertEqual(reinvite.headers["Session-Expires"], "90;refresher=uac")
            self.alice.dataReceived(respond_to(reinvite, 200, to_tag=None, body=ANSWER, headers=[
                ("Content-Type", "application/sdp"), ("Session-Expires", "90;refresher=uac")]))
            [ack] = written(self.transport)
            self.assertEqual(ack.method, "ACK")
            self.clock.advance(45)
            self.assertEqual([m.method for m in written(self.transport)], ["INVITE"])
            self.assertIs(dialog.state, DialogState.CONFIRMED)
            self.assertEqual(self.hangups, 0)
            dialog.bye()
            written(self.transport)

    def test_refresh_answered_491_retried_after_the_glare_delay(self) -> None:
        """RFC 3261 §14.1: a refresh answered 491 is sent again (a new CSeq) after the
        random delay, 2.1-4 s for the Call-ID's owner; nothing is sent before 2.1 s."""
        dialog, _, invite = self.dial()
        self.answer(invite, [("Session-Expires", "90;refresher=uac"),
                             ("Allow", "INVITE, ACK, BYE, UPDATE")])
        self.clock.advance(45)
        [update] = written(self.transport)
        self.alice.dataReceived(respond_to(update, 491, to_tag=None))
        self.clock.advance(2.09)
        self.assertEqual(written(self.transport), [])
        self.clock.advance(1.91)
        [retry] = written(self.transport)
        self.assertEqual((retry.method, retry.cseq[0]), ("UPDATE", update.cseq[0] + 1))
        self.assertIs(dialog.state, DialogState.CONFIRMED)

    def test_hangup_cancels_the_session_timer(self) -> None:
        """A call that ended leaves no session-timer timer behind."""
        dialog, _, invite = self.dial()
        self.answer(invite, [])
        self.assertEqual(self.alice.pending_timer_count, 2)
        dialog.bye()
        [bye] = written(self.transport)
        self.alice.dataReceived(respond_to(bye, 200, to_tag=None))
        self.assertEqual((self.alice.dialog_count, self.alice.pending_timer_count), (0, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class TwoUserAgentsTests(CallPair):
    """Two voiptwisted UAs in memory: the negotiation meets itself."""

    def test_call_kept_up_by_the_answerer(self) -> None:
        """RFC 4028 §7.1/§9/§10: Alice asks for 1800 s without naming a refresher, Bob (the
        answerer) takes the role and refreshes by UPDATE (Alice allows it) every 900 s;
        Alice, not refreshing, restarts her expiry on each and the call outlives many
        intervals; each side keeps exactly two timers (refresh, expiry) throughout."""
        dialog, d = self.dial()
        self.successResultOf(d)
        [callee] = self.callee.instances
        self.assertEqual(
            (dialog.session_timer.interval, dialog.session_timer.we_refresh), (1800, False)
        )
        self.assertEqual(
            (callee.session_timer.interval, callee.session_timer.we_refresh), (1800, True)
        )
        cseq = callee.outbound_cseq
        for _ in range(8 * 36):  # eight hours in 100 s steps
            self.clock.advance(100)
            self.pump.flush()
        self.assertEqual(callee.outbound_cseq - cseq, 32)  # one UPDATE per 900 s
        self.assertIs(dialog.state, DialogState.CONFIRMED)
        self.assertIs(callee.state, DialogState.CONFIRMED)
        self.assertEqual(
            (self.alice.pending_timer_count, self.bob.pending_timer_count), (1, 2)
        )
        dialog.bye()
        self.pump.flush()
        self.assertNothingLeft()
