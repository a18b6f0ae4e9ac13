"""Tests for re-INVITEs on an established call (RFC 3261 §12.2.2, §14.2; RFC 3264 §8).

One protocol on a StringTransport with a ``task.Clock``; the media is the fake
``CallMedia`` of :mod:`tests.sip.test_dialog` (its ``reanswer`` mirrors the
offered direction and can be told to leave its Deferred pending).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_dialog import (
    ANSWER,
    AVP_OFFER,
    OFFER,
    SESSION_TIMERS,
    callee_class,
    connect,
    invite_bytes,
    make_media_class,
    make_protocol,
    respond_to,
    written,
)
from voiptwisted.sip.dialog import Dialog
from voiptwisted.sip.message import Request, Response
from voiptwisted.sip.transaction import T1

HOLD_OFFER = AVP_OFFER + b"a=sendonly\r\n"
RESUME_OFFER = AVP_OFFER + b"a=sendrecv\r\n"
ALICE_CONTACT = "<sip:alice@127.0.0.1:5099;transport=tls>"


class ChangeSession:
    """A session that records ``media_changed`` calls."""

    def __init__(self, dialog: Any, **kwargs: Any) -> None:
        self.dialog = dialog
        self.changes: list[str] = []
        self.stopped = 0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.stopped += 1

    def media_changed(self, direction: str) -> None:
        self.changes.append(direction)


class Callee(Dialog):
    """Answers every call with a ChangeSession."""

    instances: list[Callee] = []

    def call_received(self) -> None:
        type(self).instances.append(self)
        self.answer(session_class=ChangeSession)


def reinvite(
    tag: str,
    *,
    cseq: int = 2,
    branch: str | None = None,
    body: bytes = HOLD_OFFER,
    contact: str = ALICE_CONTACT,
    method: str = "INVITE",
) -> bytes:
    """A re-INVITE (or its ACK/CANCEL) from Alice inside the dialog with our *tag*."""
    data = invite_bytes(
        method=method, cseq=cseq, to_tag=tag, body=body,
        branch=branch or f"z9hG4bKre{cseq}",
    )
    return data.replace(ALICE_CONTACT.encode(), contact.encode())


class ReinviteTests(SynchronousTestCase):
    """Bob answers Alice's call; Alice then re-INVITEs."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.media = make_media_class()
        Callee.instances = []
        self.bob = make_protocol(
            "sip:bob@example.com", self.clock, self.media, dialog_class=Callee
        )
        self.transport = connect(self.bob)

    def establish(self) -> tuple[Callee, str]:
        """INVITE, 200, ACK: the call is up."""
        self.bob.dataReceived(invite_bytes())
        tag = written(self.transport)[-1].remote_tag
        self.bob.dataReceived(invite_bytes(method="ACK", branch="z9hG4bKa", body=b"", to_tag=tag))
        [callee] = Callee.instances
        self.assertIsNotNone(callee.session)
        return callee, tag

    def ack(self, tag: str, cseq: int = 2, body: bytes = b"") -> None:
        self.bob.dataReceived(
            reinvite(tag, method="ACK", cseq=cseq, branch=f"z9hG4bKack{cseq}", body=body)
        )

    def test_hold_answered_recvonly(self) -> None:
        """RFC 3261 §14.2 / RFC 3264 §8.4: a sendonly offer (hold) gets 200 with our recvonly
        answer and a Contact; the session hears of it; the call goes on."""
        callee, tag = self.establish()
        self.bob.dataReceived(reinvite(tag))
        provisional, ok = written(self.transport)
        self.assertEqual((provisional.status_code, ok.status_code), (100, 200))
        self.assertEqual(ok.cseq, (2, "INVITE"))
        self.assertEqual(ok.body, ANSWER + b"a=recvonly\r\n")
        self.assertEqual(ok.headers["Content-Type"], "application/sdp")
        self.assertIn("sip:bob@", ok.headers["Contact"])
        self.assertEqual(ok.remote_tag, tag)
        self.assertEqual(self.media.created[0].reoffers, [HOLD_OFFER])
        self.assertEqual(callee.session.changes, ["recvonly"])
        self.ack(tag)
        self.bob.dataReceived(reinvite(tag, cseq=3, body=RESUME_OFFER))
        self.assertEqual(written(self.transport)[-1].body, ANSWER + b"a=sendrecv\r\n")
        self.assertEqual(callee.session.changes, ["recvonly", "sendrecv"])
        self.ack(tag, 3)
        self.assertEqual(self.bob.dialog_count, 1)
        self.assertFalse(self.media.created[0].stopped)

    def test_unchanged_offer_does_not_notify(self) -> None:
        """RFC 4028 session refresh: the same offer again changes nothing the session sees."""
        callee, tag = self.establish()
        self.bob.dataReceived(reinvite(tag, body=RESUME_OFFER))
        self.assertEqual(written(self.transport)[-1].status_code, 200)
        self.assertEqual(callee.session.changes, [])

    def test_2xx_retransmitted_until_ack(self) -> None:
        """RFC 3261 §14.2 / §13.3.1.4: the re-INVITE's 2xx is resent at T1, 2*T1 ... until
        the ACK (CSeq of the re-INVITE) arrives; then no timer is left."""
        _callee, tag = self.establish()
        self.bob.dataReceived(reinvite(tag))
        ok = written(self.transport)[-1]
        self.clock.advance(T1)
        self.assertEqual([bytes(m) for m in written(self.transport)], [bytes(ok)])
        self.clock.advance(2 * T1)
        self.assertEqual([m.status_code for m in written(self.transport)], [200])
        self.ack(tag, cseq=1)  # the first INVITE's CSeq: not this ACK
        self.clock.advance(4 * T1)
        self.assertEqual([m.status_code for m in written(self.transport)], [200])
        self.ack(tag)
        self.assertEqual(self.bob.pending_timer_count, SESSION_TIMERS)
        self.clock.advance(60)
        self.assertEqual(written(self.transport), [])

    def test_no_ack_ends_call_with_bye(self) -> None:
        """RFC 3261 §14.2: a UAS whose 2xx to a re-INVITE is never ACKed SHOULD send BYE."""
        _callee, tag = self.establish()
        self.bob.dataReceived(reinvite(tag))
        written(self.transport)
        self.clock.advance(64 * T1)
        requests = [m for m in written(self.transport) if isinstance(m, Request)]
        self.assertEqual([m.method for m in requests], ["BYE"])
        self.assertTrue(self.media.created[0].stopped)

    def test_target_refresh(self) -> None:
        """RFC 3261 §12.2.2: the re-INVITE's Contact becomes the remote target, so the next
        in-dialog request (our BYE) goes there."""
        callee, tag = self.establish()
        moved = "<sip:alice@127.0.0.1:6000;transport=tls>"
        self.bob.dataReceived(reinvite(tag, contact=moved))
        written(self.transport)
        self.assertEqual(callee.remote_contact, "sip:alice@127.0.0.1:6000;transport=tls")
        self.ack(tag)
        callee.bye()
        [bye] = written(self.transport)
        self.assertEqual(bye.uri, "sip:alice@127.0.0.1:6000;transport=tls")

    def test_unacceptable_offer_488_keeps_call(self) -> None:
        """RFC 3261 §14.2: an offer we cannot accept gets 488 with a Warning; the session
        and the remote target stay as they were and a later re-INVITE still works."""
        callee, tag = self.establish()
        media = self.media.created[0]
        self.bob.dataReceived(
            reinvite(tag, body=OFFER, contact="<sip:alice@127.0.0.1:6000;transport=tls>")
        )
        _provisional, refused = written(self.transport)
        self.assertEqual(refused.status_code, 488)
        self.assertIn("no audio stream", refused.headers["Warning"])
        self.assertTrue(refused.headers["Warning"].startswith('399 voiptwisted "'))
        self.assertEqual(media.negotiated.direction, "sendrecv")
        self.assertEqual(callee.remote_contact, "sip:alice@127.0.0.1:5099;transport=tls")
        self.assertEqual(callee.session.changes, [])
        self.bob.dataReceived(reinvite(tag, method="ACK", body=b""))  # §17.2.1: same branch
        self.assertEqual(self.bob.transaction_count, 0)
        self.bob.dataReceived(reinvite(tag, cseq=3))
        self.assertEqual(written(self.transport)[-1].status_code, 200)
        self.assertFalse(media.stopped)

    def test_reinvite_without_sdp(self) -> None:
        """RFC 3261 §14.2 / §13.2.1, RFC 3264 §5: no SDP -> our offer in the 2xx, the answer
        taken from the ACK."""
        callee, tag = self.establish()
        media = self.media.created[0]
        self.bob.dataReceived(reinvite(tag, body=b""))
        ok = written(self.transport)[-1]
        self.assertEqual(ok.status_code, 200)
        self.assertEqual(ok.body, AVP_OFFER + b"a=sendrecv\r\n")
        self.assertEqual(callee.session.changes, [])  # nothing changed until the answer
        answer = ANSWER + b"a=sendonly\r\n"
        self.ack(tag, body=answer)
        self.assertEqual(media.answer, answer)
        self.assertEqual(callee.session.changes, ["recvonly"])
        self.assertEqual(self.bob.pending_timer_count, SESSION_TIMERS)

    def test_reinvite_without_sdp_unusable_answer_sends_bye(self) -> None:
        """RFC 3261 §13.2.1: the ACK must carry the answer to our offer; without a usable
        one the session cannot go on: BYE."""
        _callee, tag = self.establish()
        self.bob.dataReceived(reinvite(tag, body=b""))
        written(self.transport)
        self.ack(tag)
        [bye] = written(self.transport)
        self.assertEqual(bye.method, "BYE")
        self.assertTrue(self.media.created[0].stopped)

    def test_second_reinvite_while_pending_500_retry_after(self) -> None:
        """RFC 3261 §14.2: an INVITE before the final response to an earlier one on the dialog
        gets 500 with a Retry-After of 0-10 s; the first one is still answered."""
        _callee, tag = self.establish()
        media = self.media.created[0]
        media.hold_reinvites = True
        self.bob.dataReceived(reinvite(tag))
        self.assertEqual([m.status_code for m in written(self.transport)], [100])
        self.bob.dataReceived(reinvite(tag, cseq=3))
        _provisional, refused = written(self.transport)
        self.assertEqual(refused.status_code, 500)
        self.assertEqual(refused.cseq, (3, "INVITE"))
        self.assertIn(int(refused.headers["Retry-After"]), range(11))
        media.pending[0].callback(ANSWER + b"a=recvonly\r\n")
        ok = written(self.transport)[-1]
        self.assertEqual((ok.status_code, ok.cseq), (200, (2, "INVITE")))

    def test_cancel_pending_reinvite_487(self) -> None:
        """RFC 3261 §9.2 / §14.2: CANCEL of a pending re-INVITE: 200 to the CANCEL, 487 to the
        re-INVITE, the media work is cancelled and the call carries on."""
        callee, tag = self.establish()
        media = self.media.created[0]
        media.hold_reinvites = True
        self.bob.dataReceived(reinvite(tag, branch="z9hG4bKcancelme"))
        written(self.transport)
        self.bob.dataReceived(reinvite(tag, method="CANCEL", branch="z9hG4bKcancelme", body=b""))
        cancel_ok, terminated = written(self.transport)
        self.assertEqual((cancel_ok.status_code, cancel_ok.cseq), (200, (2, "CANCEL")))
        self.assertEqual((terminated.status_code, terminated.cseq), (487, (2, "INVITE")))
        self.assertEqual(media.cancelled, [HOLD_OFFER])
        self.bob.dataReceived(reinvite(tag, method="ACK", branch="z9hG4bKcancelme", body=b""))
        self.assertEqual(self.bob.transaction_count, 0)
        self.assertEqual(self.bob.dialog_count, 1)
        self.assertFalse(media.stopped)
        self.assertEqual(callee.session.changes, [])
        media.hold_reinvites = False
        self.bob.dataReceived(reinvite(tag, cseq=3))
        self.assertEqual(written(self.transport)[-1].status_code, 200)

    def test_bye_while_reinvite_pending(self) -> None:
        """RFC 3261 §15.1.2: BYE while a re-INVITE is pending: 200 to the BYE and 487 to the
        re-INVITE."""
        _callee, tag = self.establish()
        self.media.created[0].hold_reinvites = True
        self.bob.dataReceived(reinvite(tag))
        written(self.transport)
        self.bob.dataReceived(reinvite(tag, method="BYE", cseq=3, body=b""))
        codes = sorted((m.status_code, m.cseq[1]) for m in written(self.transport))
        self.assertEqual(codes, [(200, "BYE"), (487, "INVITE")])
        self.assertEqual(self.bob.dialog_count, 0)

    def test_reinvite_before_final_response_500(self) -> None:
        """RFC 3261 §14.2: a re-INVITE in the early dialog, before our final response to the
        initial INVITE, gets 500 with Retry-After; the call can still be answered."""
        self.bob.dialog_class = callee_class("ring")
        self.bob.dataReceived(invite_bytes())
        _trying, ringing = written(self.transport)
        tag = ringing.remote_tag
        self.bob.dataReceived(reinvite(tag))
        refused = written(self.transport)[-1]
        self.assertEqual(refused.status_code, 500)
        self.assertIn(int(refused.headers["Retry-After"]), range(11))
        [callee] = self.bob.dialog_class.instances
        callee.answer(session_class=ChangeSession)
        self.assertEqual(written(self.transport)[-1].status_code, 200)

    def test_reinvite_before_ack_491(self) -> None:
        """RFC 3261 §14.1/§14.2: a re-INVITE before the ACK of our 2xx (its INVITE transaction
        still in progress for the peer) gets 491 Request Pending; the 2xx is still resent."""
        self.bob.dataReceived(invite_bytes())
        tag = written(self.transport)[-1].remote_tag
        self.bob.dataReceived(reinvite(tag))
        self.assertEqual([m.status_code for m in written(self.transport)], [100, 491])
        self.bob.dataReceived(invite_bytes(method="ACK", branch="z9hG4bKa", body=b"", to_tag=tag))
        self.assertIsNotNone(Callee.instances[0].session)

    def test_reinvite_with_other_content_type_415(self) -> None:
        """RFC 3261 §21.4.16: a body that is not application/sdp gets 415 with Accept."""
        _callee, tag = self.establish()
        data = reinvite(tag).replace(b"application/sdp", b"text/plain")
        self.bob.dataReceived(data)
        refused = written(self.transport)[-1]
        self.assertEqual(refused.status_code, 415)
        self.assertEqual(refused.headers["Accept"], "application/sdp")


class OutboundReinviteTests(SynchronousTestCase):
    """We called; the callee re-INVITEs."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.media = make_media_class()
        self.alice = make_protocol("sip:alice@example.com", self.clock, self.media)
        self.transport = connect(self.alice, 5090)

    def dial(self) -> tuple[Dialog, Any, Request]:
        dialog = Dialog(sip=self.alice)
        d = dialog.dial("sip:bob@example.com", session_class=ChangeSession)
        [invite] = written(self.transport)
        return dialog, d, invite

    def reinvite_from_bob(self, dialog: Dialog, cseq: int = 1, body: bytes = HOLD_OFFER) -> bytes:
        return (
            "INVITE sip:alice@127.0.0.1:5090;transport=tls SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKbob{cseq};rport\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:bob@example.com>;tag=bobtag\r\n"
            f"To: <sip:alice@example.com>;tag={dialog.local_tag}\r\n"
            f"Call-ID: {dialog.call_id}\r\n"
            f"CSeq: {cseq} INVITE\r\n"
            "Contact: <sip:bob@127.0.0.1:5088;transport=tls>\r\n"
            "Content-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    def test_reinvite_while_our_invite_in_progress_491(self) -> None:
        """RFC 3261 §14.2: an INVITE on a dialog while our own INVITE on it is in progress
        gets 491 Request Pending."""
        dialog, d, invite = self.dial()
        self.alice.dataReceived(respond_to(invite, 180))
        self.alice.dataReceived(self.reinvite_from_bob(dialog))
        responses = [m for m in written(self.transport) if isinstance(m, Response)]
        self.assertEqual([m.status_code for m in responses], [100, 491])
        self.assertNoResult(d)

    def test_callee_puts_us_on_hold(self) -> None:
        """RFC 3264 §8.4: the callee's sendonly re-INVITE on our outbound call is answered
        recvonly and the session is told."""
        dialog, d, invite = self.dial()
        self.alice.dataReceived(respond_to(invite, 200, body=ANSWER))
        self.successResultOf(d)
        written(self.transport)
        self.alice.dataReceived(self.reinvite_from_bob(dialog))
        ok = written(self.transport)[-1]
        self.assertEqual(ok.status_code, 200)
        self.assertIn(b"a=recvonly", ok.body)
        self.assertEqual(dialog.session.changes, ["recvonly"])
