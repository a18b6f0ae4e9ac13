"""Call transfer: REFER (RFC 3515), Refer-Sub (RFC 4488), Replaces (RFC 3891).

Bob (our UA) on a StringTransport with a ``task.Clock`` where the exact messages matter;
two of our UAs wired in memory (``twisted.test.iosim``) for a whole blind transfer, where
both the transferor's and the transferee's side are ours.  Media is the fake
``CallMedia`` of :mod:`tests.sip.test_dialog`.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.internet.defer import CancelledError
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_dialog import (
    ANSWER,
    SESSION_TIMERS,
    FakeSession,
    callee_class,
    connect,
    invite_bytes,
    make_media_class,
    make_protocol,
    respond_to,
    written,
)
from voiptwisted.sip.dialog import Dialog, DialogState
from voiptwisted.sip.headers import SIPParseError
from voiptwisted.sip.message import Message, Request, Response
from voiptwisted.sip.refer import (
    Replaces,
    TransferFailed,
    parse_refer_to,
    parse_sipfrag,
    refer_to_value,
    sipfrag,
)
from voiptwisted.sip.transaction import T1


def refer_bytes(tag: str, cseq: int, refer_to: str | None, extra: str = "") -> bytes:
    """A REFER from Alice in the dialog with our *tag* (no Refer-To when None)."""
    header = f"Refer-To: {refer_to}\r\n" if refer_to is not None else ""
    return invite_bytes(
        method="REFER", cseq=cseq, to_tag=tag, body=b"", branch=f"z9hG4bKrefer{cseq}",
        extra=header + extra,
    )


def requests(messages: list[Message]) -> list[Request]:
    return [m for m in messages if isinstance(m, Request)]


def responses(messages: list[Message]) -> list[Response]:
    return [m for m in messages if isinstance(m, Response)]


class SyntaxTests(SynchronousTestCase):
    """Refer-To with an embedded Replaces, the Replaces header, sipfrag bodies."""

    def test_replaces_escaped_in_refer_to(self) -> None:
        """RFC 3891 §1 / RFC 3515 §2.1 / RFC 3261 §19.1.1: Replaces goes into the Refer-To
        URI as a %-escaped header (``@`` ``;`` ``=`` escaped) and comes back out whole."""
        replaces = Replaces("12345@192.168.118.3", "12345", "5FFE-3994")
        value = refer_to_value("sip:carol@example.com", replaces)
        self.assertEqual(
            value,
            "<sip:carol@example.com?Replaces=12345%40192.168.118.3%3Bto-tag%3D12345"
            "%3Bfrom-tag%3D5FFE-3994>",
        )
        self.assertEqual(parse_refer_to([value]), ("sip:carol@example.com", replaces))
        early = Replaces("a@b", "1", "2", early_only=True)
        self.assertEqual(parse_refer_to([refer_to_value("sip:c@d", early)])[1], early)

    def test_other_embedded_headers_dropped(self) -> None:
        """RFC 3515 §2.1: only Replaces of the Refer-To's URI headers reaches our INVITE."""
        self.assertEqual(
            parse_refer_to(["<sip:carol@example.com?Subject=hi&Call-Info=x>"]),
            ("sip:carol@example.com", None),
        )

    def test_exactly_one_refer_to(self) -> None:
        """RFC 3515 §2.4.1: a REFER carries exactly one Refer-To value."""
        for values in ([], ["<sip:a@b>", "<sip:c@d>"], ["<sip:a@b>, <sip:c@d>"], ["<a"]):
            with self.assertRaises(SIPParseError):
                parse_refer_to(values)

    def test_replaces_parse(self) -> None:
        """RFC 3891 §6.1: Call-ID, to-tag and from-tag are all needed; early-only a flag."""
        self.assertEqual(
            Replaces.parse("abc@h ; from-tag=2;to-tag=1;early-only"),
            Replaces("abc@h", "1", "2", True),
        )
        for bad in ("abc@h;to-tag=1", "abc@h;from-tag=2", ";to-tag=1;from-tag=2", "x" * 5000):
            with self.assertRaises(SIPParseError):
                Replaces.parse(bad)

    def test_sipfrag(self) -> None:
        """RFC 3515 §2.4.5 / RFC 3420: the NOTIFY body is a status line."""
        self.assertEqual(sipfrag(100), b"SIP/2.0 100 Trying\r\n")
        self.assertEqual(parse_sipfrag(b"SIP/2.0 486 Busy Here\r\n"), (486, "Busy Here"))
        self.assertEqual(parse_sipfrag(sipfrag(200)), (200, "OK"))
        for bad in (b"", b"INVITE sip:a@b SIP/2.0", b"SIP/2.0 99 x", b"SIP/2.0 2000 x"):
            self.assertIsNone(parse_sipfrag(bad))


class BobOnTransport(SynchronousTestCase):
    """Bob answers Alice's call on a StringTransport; Alice's side is written by hand."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.media = make_media_class()
        self.callee = callee_class("answer")
        self.bob = make_protocol(
            "sip:bob@example.com", self.clock, self.media, dialog_class=self.callee
        )
        self.transport = connect(self.bob)

    def establish(self, call_id: str = "call-1@example.com") -> tuple[Dialog, str]:
        self.bob.dataReceived(invite_bytes(call_id=call_id, branch=f"z9hG4bK{call_id}"))
        tag = written(self.transport)[-1].remote_tag
        self.bob.dataReceived(
            invite_bytes(method="ACK", branch="z9hG4bKa", body=b"", to_tag=tag, call_id=call_id)
        )
        return self.callee.instances[-1], tag

    def feed(self, data: bytes) -> list[Message]:
        self.bob.dataReceived(data)
        return written(self.transport)

    def answer(self, request: Request, code: int = 200, **kwargs: Any) -> list[Message]:
        return self.feed(respond_to(request, code, **kwargs))


class ReferReceivedTests(BobOnTransport):
    """Alice transfers her call with Bob to Carol: Bob is the transferee."""

    def test_blind_transfer(self) -> None:
        """RFC 3515 §2.4.2, §2.4.4, §2.4.5: 202; NOTIFY 100 Trying (active); an INVITE to the
        Refer-To target with the call's session class; its 200 is reported in a final
        NOTIFY (terminated;reason=noresource); once that is answered the call ends (BYE)."""
        callee, tag = self.establish()
        sent = self.feed(refer_bytes(tag, 2, "<sip:carol@example.com>",
                                     "Referred-By: <sip:alice@example.com>\r\n"))
        [accepted] = responses(sent)
        self.assertEqual((accepted.status_code, accepted.cseq), (202, (2, "REFER")))
        self.assertIn("Contact", accepted.headers)
        self.assertNotIn("Refer-Sub", accepted.headers)
        notify, invite = requests(sent)
        self.assertEqual(notify.method, "NOTIFY")
        self.assertEqual(notify.headers["Event"], "refer")
        self.assertTrue(notify.headers["Subscription-State"].startswith("active;expires="))
        self.assertEqual(notify.headers["Content-Type"], "message/sipfrag;version=2.0")
        self.assertEqual(notify.body, b"SIP/2.0 100 Trying\r\n")
        self.assertEqual((notify.call_id, notify.remote_tag), ("call-1@example.com", "alicetag"))
        self.assertEqual((invite.method, invite.uri), ("INVITE", "sip:carol@example.com"))
        self.assertNotEqual(invite.call_id, "call-1@example.com")
        self.assertEqual(invite.headers["Referred-By"], "<sip:alice@example.com>")
        self.assertEqual(self.answer(notify, to_tag=None), [])
        after = self.answer(invite, to_tag="caroltag", body=ANSWER)
        ack, final = requests(after)
        self.assertEqual(ack.method, "ACK")
        self.assertEqual(final.headers["Subscription-State"], "terminated;reason=noresource")
        self.assertEqual(final.body, b"SIP/2.0 200 OK\r\n")
        self.assertEqual(callee.state, DialogState.CONFIRMED)  # BYE waits for the NOTIFY's 200
        [bye] = requests(self.answer(final, to_tag=None))
        self.assertEqual((bye.method, bye.call_id), ("BYE", "call-1@example.com"))
        self.answer(bye, to_tag=None)
        self.assertEqual(callee.state, DialogState.TERMINATED)
        [carol_call] = self.bob.dialogs
        self.assertEqual(carol_call.session.kwargs, {"colour": "blue"})
        self.assertEqual(carol_call.state, DialogState.CONFIRMED)

    def test_target_refuses(self) -> None:
        """RFC 3515 §2.4.5: the target's 486 is the final NOTIFY's status; the call stays."""
        callee, tag = self.establish()
        notify, invite = requests(self.feed(refer_bytes(tag, 2, "<sip:carol@example.com>")))
        self.answer(notify, to_tag=None)
        after = self.answer(invite, 486, to_tag="caroltag")
        final = next(m for m in requests(after) if m.method == "NOTIFY")
        self.assertEqual(final.body, b"SIP/2.0 486 Busy Here\r\n")
        self.assertEqual(final.headers["Subscription-State"], "terminated;reason=noresource")
        self.assertEqual(requests(self.answer(final, to_tag=None)), [])
        self.assertEqual(callee.state, DialogState.CONFIRMED)

    def test_refer_sub_false(self) -> None:
        """RFC 4488 §4: with ``Refer-Sub: false`` the 202 says ``Refer-Sub: false`` and no
        NOTIFY is sent; the call still ends when the transfer succeeds."""
        _, tag = self.establish()
        sent = self.feed(refer_bytes(tag, 2, "<sip:carol@example.com>", "Refer-Sub: false\r\n"
                                     "Require: norefersub\r\n"))
        [accepted] = responses(sent)
        self.assertEqual((accepted.status_code, accepted.headers["Refer-Sub"]), (202, "false"))
        [invite] = requests(sent)
        self.assertEqual(invite.method, "INVITE")
        after = requests(self.answer(invite, to_tag="caroltag", body=ANSWER))
        self.assertEqual([m.method for m in after], ["ACK", "BYE"])

    def test_missing_or_double_refer_to_400(self) -> None:
        """RFC 3515 §2.4.1: a REFER without exactly one Refer-To gets 400; nothing is dialled."""
        _, tag = self.establish()
        for cseq, refer in enumerate(
            (refer_bytes(tag, 2, None), refer_bytes(tag, 3, "<sip:a@b>, <sip:c@d>")), start=2
        ):
            [response] = self.feed(refer)
            self.assertEqual((response.status_code, response.cseq[0]), (400, cseq))

    def test_unsupported_target_scheme_416(self) -> None:
        """RFC 3261 §21.4.17: a target we cannot call (http:) gets 416."""
        _, tag = self.establish()
        [response] = self.feed(refer_bytes(tag, 2, "<http://example.com/>"))
        self.assertEqual(response.status_code, 416)

    def test_one_transfer_at_a_time(self) -> None:
        """Bounded: a second REFER while a transfer runs gets 491 Request Pending; after
        it ends, the next REFER's NOTIFYs carry ``id`` = its CSeq (RFC 3515 §2.4.6)."""
        _, tag = self.establish()
        notify, invite = requests(self.feed(refer_bytes(tag, 2, "<sip:carol@example.com>")))
        [busy] = self.feed(refer_bytes(tag, 3, "<sip:dave@example.com>"))
        self.assertEqual(busy.status_code, 491)
        self.answer(notify, to_tag=None)
        final = next(m for m in requests(self.answer(invite, 480, to_tag="c"))
                     if m.method == "NOTIFY")
        self.answer(final, to_tag=None)
        sent = self.feed(refer_bytes(tag, 4, "<sip:dave@example.com>"))
        self.assertEqual(responses(sent)[0].status_code, 202)
        notify = requests(sent)[0]
        self.assertEqual(notify.headers["Event"], "refer;id=4")

    def test_refer_before_answer_491(self) -> None:
        """A REFER in a dialog not confirmed yet gets 491 (retry once the call is up)."""
        ringing = callee_class("ring")
        bob = make_protocol("sip:bob@example.com", self.clock, self.media, dialog_class=ringing)
        transport = connect(bob)
        bob.dataReceived(invite_bytes())
        tag = written(transport)[-1].remote_tag
        bob.dataReceived(refer_bytes(tag, 2, "<sip:carol@example.com>"))
        [response] = written(transport)
        self.assertEqual(response.status_code, 491)

    def test_refer_outside_dialog_403(self) -> None:
        """RFC 3515 §2.4.2: we refuse a REFER outside a dialog (403); one naming a dialog we
        do not have gets 481 (RFC 3261 §12.2.2)."""
        [outside] = self.feed(refer_bytes("", 1, "<sip:carol@example.com>"))
        self.assertEqual(outside.status_code, 403)
        [unknown] = self.feed(refer_bytes("nosuchtag", 1, "<sip:carol@example.com>"))
        self.assertEqual(unknown.status_code, 481)

    def test_transfer_times_out(self) -> None:
        """Bounded: a target still ringing after ``transfer_timeout`` is cancelled and 408
        reported in the final NOTIFY; the call stays."""
        callee, tag = self.establish()
        notify, invite = requests(self.feed(refer_bytes(tag, 2, "<sip:carol@example.com>")))
        self.answer(notify, to_tag=None)
        self.answer(invite, 180, to_tag="caroltag")
        self.clock.advance(callee.transfer_timeout)
        sent = requests(written(self.transport))
        self.assertEqual(sorted(m.method for m in sent), ["CANCEL", "NOTIFY"])
        final = next(m for m in sent if m.method == "NOTIFY")
        self.assertEqual(final.body, b"SIP/2.0 408 Request Timeout\r\n")
        self.assertEqual(callee.state, DialogState.CONFIRMED)

    def test_attended_transfer_carries_replaces(self) -> None:
        """RFC 3891 §4: the Replaces embedded in the Refer-To goes into our INVITE."""
        _, tag = self.establish()
        replaces = Replaces("other@example.com", "carol1", "alice1")
        refer_to = refer_to_value("sip:carol@example.com", replaces)
        _, invite = requests(self.feed(refer_bytes(tag, 2, refer_to)))
        self.assertEqual(invite.uri, "sip:carol@example.com")
        self.assertEqual(Replaces.parse(invite.headers["Replaces"]), replaces)

    def test_hook_declines(self) -> None:
        """``transfer_received`` returning None declines: final NOTIFY 603, no INVITE."""
        _, tag = self.establish()
        self.callee.transfer_received = lambda self, target, replaces=None: None  # type: ignore
        notify, final = requests(self.feed(refer_bytes(tag, 2, "<sip:carol@example.com>")))
        self.assertEqual((notify.body, final.body), (sipfrag(100), b"SIP/2.0 603 Decline\r\n"))

    def test_bye_ends_the_transfer(self) -> None:
        """The call ends while the transfer runs: its timer goes with it (nothing left)."""
        callee, tag = self.establish()
        notify, invite = requests(self.feed(refer_bytes(tag, 2, "<sip:carol@example.com>")))
        self.answer(notify, to_tag=None)
        self.feed(invite_bytes(method="BYE", cseq=3, to_tag=tag, body=b"", branch="z9hG4bKb"))
        self.assertEqual(callee.state, DialogState.TERMINATED)
        self.assertIsNone(callee._refer_in)
        self.answer(invite, 486, to_tag="caroltag")
        self.assertEqual(self.bob.dialog_count, 0)
        self.assertEqual(self.bob.pending_timer_count, 0)


def notify_bytes(tag: str, cseq: int, body: bytes, event: str = "refer",
                 state: str = "active;expires=60") -> bytes:
    data = invite_bytes(
        method="NOTIFY", cseq=cseq, to_tag=tag, body=body, branch=f"z9hG4bKn{cseq}",
        extra=f"Event: {event}\r\nSubscription-State: {state}\r\n",
    )
    return data.replace(b"application/sdp", b"message/sipfrag;version=2.0")


class TransferSentTests(BobOnTransport):
    """Bob transfers Alice (the transferor's side): REFER out, NOTIFYs in."""

    def refer(self, target: Any = "sip:carol@example.com") -> tuple[Any, Request, str]:
        callee, tag = self.establish()
        d = callee.transfer(target)
        [refer] = written(self.transport)
        return d, refer, tag

    def test_blind_transfer(self) -> None:
        """RFC 3515 §2.4.3, §2.4.5: REFER with Refer-To and Referred-By; each NOTIFY gets
        200; the Deferred fires with the final sipfrag status."""
        d, refer, tag = self.refer()
        self.assertEqual(refer.method, "REFER")
        self.assertEqual(refer.headers["Refer-To"], "<sip:carol@example.com>")
        self.assertEqual(refer.headers["Referred-By"], "<sip:bob@example.com>")
        self.assertEqual(self.answer(refer, 202, to_tag=None), [])
        [ok] = self.feed(notify_bytes(tag, 2, sipfrag(100)))
        self.assertEqual(ok.status_code, 200)
        self.assertNoResult(d)
        [ok] = self.feed(notify_bytes(tag, 3, sipfrag(200), state="terminated;reason=noresource"))
        self.assertEqual(ok.status_code, 200)
        self.assertEqual(self.successResultOf(d), 200)
        # The call stays up (RFC 5589 §6): only its session timers remain (RFC 4028).
        self.assertEqual(self.bob.pending_timer_count, SESSION_TIMERS)

    def test_target_busy(self) -> None:
        """RFC 3515 §2.4.5: a final 486 in the sipfrag is the result."""
        d, refer, tag = self.refer()
        self.answer(refer, 202, to_tag=None)
        self.feed(notify_bytes(tag, 2, sipfrag(486), state="terminated;reason=noresource"))
        self.assertEqual(self.successResultOf(d), 486)

    def test_refer_refused(self) -> None:
        """A REFER answered 403 fails the transfer with TransferFailed(403)."""
        d, refer, _ = self.refer()
        self.answer(refer, 403, to_tag=None)
        self.assertEqual(self.failureResultOf(d, TransferFailed).value.status_code, 403)

    def test_refer_sub_false_answer(self) -> None:
        """RFC 4488 §4: a 2xx with Refer-Sub: false means no NOTIFY: the 2xx is the result."""
        d, refer, _ = self.refer()
        self.answer(refer, 202, to_tag=None, headers=[("Refer-Sub", "false")])
        self.assertEqual(self.successResultOf(d), 202)

    def test_no_final_notify_times_out(self) -> None:
        """Bounded: no final NOTIFY within ``transfer_timeout`` fails with 408."""
        d, refer, tag = self.refer()
        self.answer(refer, 202, to_tag=None)
        self.feed(notify_bytes(tag, 2, sipfrag(100)))
        self.clock.advance(Dialog.transfer_timeout)
        self.assertEqual(self.failureResultOf(d, TransferFailed).value.status_code, 408)

    def test_notify_without_subscription(self) -> None:
        """RFC 6665 §4.1.3: a NOTIFY for no subscription of ours gets 481, another event
        package 489 Bad Event; a terminated subscription without a final status fails."""
        callee, tag = self.establish()
        [response] = self.feed(notify_bytes(tag, 2, sipfrag(200)))
        self.assertEqual(response.status_code, 481)
        d = callee.transfer("sip:carol@example.com")
        [refer] = written(self.transport)
        self.answer(refer, 202, to_tag=None)
        [response] = self.feed(notify_bytes(tag, 3, b"", event="presence"))
        self.assertEqual(response.status_code, 489)
        [response] = self.feed(notify_bytes(tag, 4, sipfrag(100), event="refer;id=999"))
        self.assertEqual(response.status_code, 481)
        self.feed(notify_bytes(tag, 5, b"", state="terminated;reason=timeout"))
        self.assertEqual(self.failureResultOf(d, TransferFailed).value.status_code, 487)

    def test_attended_transfer(self) -> None:
        """RFC 3891 §3/§4, RFC 5589 §7: the Refer-To is the other call's remote target with
        its Replaces escaped in; seen from that party our tag is the from-tag."""
        first, _ = self.establish("call-1@example.com")
        other, _ = self.establish("call-2@example.com")
        first.attended_transfer(other)
        [refer] = written(self.transport)
        target, replaces = parse_refer_to([refer.headers["Refer-To"]])
        self.assertEqual(target, "sip:alice@127.0.0.1:5099;transport=tls")
        self.assertEqual(replaces, Replaces("call-2@example.com", "alicetag", other.local_tag))
        self.assertIn("%3Bto-tag%3Dalicetag%3Bfrom-tag%3D", refer.headers["Refer-To"])

    def test_one_refer_at_a_time(self) -> None:
        """Bounded: transfer() while one is in progress raises."""
        callee, _ = self.establish()
        callee.transfer("sip:carol@example.com")
        with self.assertRaises(RuntimeError):
            callee.transfer("sip:dave@example.com")
        with self.assertRaises(ValueError):
            Dialog.transfer(callee, "http://example.com")

    def test_attended_needs_established_call(self) -> None:
        """RFC 3891 §4: a Replaces names a dialog with both tags: a call not established
        (no remote tag yet) cannot be the target of an attended transfer."""
        callee, _ = self.establish()
        ringing = Dialog(sip=self.bob)
        with self.assertRaises(ValueError):
            callee.attended_transfer(ringing)


class ReplacesReceivedTests(BobOnTransport):
    """An INVITE with Replaces for one of Bob's calls (RFC 3891 §3)."""

    def replacing_invite(self, replaces: str, extra: str = "") -> list[Message]:
        return self.feed(invite_bytes(
            call_id="call-2@example.com", branch="z9hG4bKrep",
            extra=f"Replaces: {replaces}\r\n{extra}",
        ))

    def test_replaces_confirmed_call(self) -> None:
        """RFC 3891 §3: an INVITE whose Replaces matches a confirmed call (Call-ID, to-tag =
        our tag, from-tag = theirs) is answered at once with that call's session class
        (``Require: replaces`` gets no 420, RFC 3261 §8.2.2.3); once it is confirmed the
        replaced call gets BYE."""
        old, tag = self.establish()
        sent = self.replacing_invite(
            f"call-1@example.com;to-tag={tag};from-tag=alicetag", "Require: replaces\r\n"
        )
        self.assertEqual([m.status_code for m in sent], [100, 200])
        self.assertEqual(len(self.callee.instances), 1)  # no call_received for it
        new_tag = sent[-1].remote_tag
        self.assertEqual(requests(written(self.transport)), [])
        [bye] = requests(self.feed(invite_bytes(
            method="ACK", call_id="call-2@example.com", branch="z9hG4bKa2", body=b"",
            to_tag=new_tag,
        )))
        self.assertEqual((bye.method, bye.call_id), ("BYE", "call-1@example.com"))
        new = self.bob.find_dialog("call-2@example.com", new_tag, "alicetag")
        self.assertEqual(new.session.kwargs, {"colour": "blue"})
        self.answer(bye, to_tag=None)
        self.assertEqual(old.state, DialogState.TERMINATED)
        self.assertEqual(self.bob.dialog_count, 1)

    def test_no_match_481(self) -> None:
        """RFC 3891 §3: no dialog matches (wrong Call-ID or a tag swapped): 481."""
        _, tag = self.establish()
        for value in (
            f"nosuch@example.com;to-tag={tag};from-tag=alicetag",
            f"call-1@example.com;to-tag=alicetag;from-tag={tag}",
        ):
            self.assertEqual(self.replacing_invite(value)[-1].status_code, 481)

    def test_early_only_486(self) -> None:
        """RFC 3891 §3: ``early-only`` naming a confirmed dialog gets 486 Busy Here."""
        _, tag = self.establish()
        sent = self.replacing_invite(
            f"call-1@example.com;to-tag={tag};from-tag=alicetag;early-only"
        )
        self.assertEqual(sent[-1].status_code, 486)

    def test_ended_call_603(self) -> None:
        """RFC 3891 §3: a dialog already ending (our BYE sent) gets 603 Declined."""
        old, tag = self.establish()
        old.bye()
        written(self.transport)
        sent = self.replacing_invite(f"call-1@example.com;to-tag={tag};from-tag=alicetag")
        self.assertEqual(sent[-1].status_code, 603)

    def test_early_dialog_we_did_not_initiate_481(self) -> None:
        """RFC 3891 §3: an early dialog not initiated by us (an inbound call ringing): 481."""
        ringing = callee_class("ring")
        bob = make_protocol("sip:bob@example.com", self.clock, self.media, dialog_class=ringing)
        transport = connect(bob)
        bob.dataReceived(invite_bytes())
        tag = written(transport)[-1].remote_tag
        bob.dataReceived(invite_bytes(
            call_id="call-2@example.com", branch="z9hG4bKrep",
            extra=f"Replaces: call-1@example.com;to-tag={tag};from-tag=alicetag\r\n",
        ))
        self.assertEqual(written(transport)[-1].status_code, 481)

    def test_early_dialog_we_initiated_cancelled(self) -> None:
        """RFC 3891 §3: an early dialog we initiated is replaced: the new call is answered
        and the old INVITE cancelled (CANCEL)."""
        outgoing = self.callee(sip=self.bob)
        dialled = outgoing.dial("sip:carol@example.com", session_class=FakeSession)
        [invite] = written(self.transport)
        self.answer(invite, 180, to_tag="caroltag")
        sent = self.feed(invite_bytes(
            call_id="call-2@example.com", branch="z9hG4bKrep",
            extra=f"Replaces: {invite.call_id};to-tag={outgoing.local_tag};from-tag=caroltag\r\n",
        ))
        self.assertEqual(sent[-1].status_code, 200)
        [cancel] = requests(self.feed(invite_bytes(
            method="ACK", call_id="call-2@example.com", branch="z9hG4bKa2", body=b"",
            to_tag=sent[-1].remote_tag,
        )))
        self.assertEqual((cancel.method, cancel.call_id), ("CANCEL", invite.call_id))
        self.failureResultOf(dialled, CancelledError)

    def test_malformed_or_double_replaces_400(self) -> None:
        """RFC 3891 §3: more than one Replaces, or a malformed one, gets 400."""
        _, tag = self.establish()
        value = f"call-1@example.com;to-tag={tag};from-tag=alicetag"
        sent = self.replacing_invite(value, f"Replaces: {value}\r\n")
        self.assertEqual(sent[-1].status_code, 400)
        self.assertEqual(self.replacing_invite("call-1@example.com")[-1].status_code, 400)


class InMemoryTransferTests(SynchronousTestCase):
    """Alice (transferee) and Bob (transferor) are both our UA, wired in memory."""

    def test_blind_transfer_end_to_end(self) -> None:
        """RFC 3515 §2.4: Alice calls Bob; Bob transfers her to carol (Bob's UA again, over
        the same flow); Bob's Deferred fires with 200 from the NOTIFYs; Alice's original
        call ends with her BYE, and her new call runs with the same session class."""
        clock = task.Clock()
        media = make_media_class()
        callee = callee_class("answer")
        alice, _bob, pump = iosim.connectedServerAndClient(
            lambda: make_protocol("sip:bob@example.com", clock, media, dialog_class=callee),
            lambda: make_protocol("sip:alice@example.com", clock, media),
            clock=clock,
        )
        caller = Dialog(sip=alice)
        caller.dial("sip:bob@example.com", session_class=FakeSession, volume=3)
        pump.flush()
        [transferor] = callee.instances
        result = transferor.transfer("sip:carol@example.com")
        pump.flush()
        self.assertEqual(self.successResultOf(result), 200)
        for _ in range(3):
            clock.advance(T1)
            pump.flush()
        self.assertEqual(caller.state, DialogState.TERMINATED)
        self.assertEqual(transferor.state, DialogState.TERMINATED)
        [new_call] = alice.dialogs
        self.assertEqual(new_call.session.kwargs, {"volume": 3})
        self.assertEqual(len(callee.instances), 2)
        self.assertEqual(callee.instances[1].state, DialogState.CONFIRMED)
