"""INFO DTMF (RFC 6086) and UPDATE (RFC 3311) received in a dialog.

One protocol on a StringTransport with a ``task.Clock``; the media is the fake
``CallMedia`` of :mod:`tests.sip.test_dialog` (its ``reanswer`` mirrors the offered
direction and can be told to leave its Deferred pending).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_dialog import (
    ANSWER,
    OFFER,
    callee_class,
    connect,
    invite_bytes,
    make_media_class,
    make_protocol,
    respond_to,
    written,
)
from tests.sip.test_reinvite import HOLD_OFFER, RESUME_OFFER, ChangeSession, reinvite
from voiptwisted.sip.dialog import MAX_INFO_BODY, Dialog, parse_dtmf_info
from voiptwisted.sip.message import Request, Response


class KeySession(ChangeSession):
    """Records ``dtmf_received`` and ``media_changed``."""

    def __init__(self, dialog: Any, **kwargs: Any) -> None:
        super().__init__(dialog, **kwargs)
        self.digits: list[str] = []

    def dtmf_received(self, digit: str) -> None:
        self.digits.append(digit)


class KeyCallee(Dialog):
    """Answers every call with a KeySession."""

    instances: list[KeyCallee] = []

    def call_received(self) -> None:
        type(self).instances.append(self)
        self.answer(session_class=KeySession)


def info(
    tag: str,
    cseq: int,
    body: bytes = b"Signal=5\r\nDuration=160\r\n",
    content_type: str = "application/dtmf-relay",
    extra: str = "",
) -> bytes:
    """An INFO from Alice in the dialog with our *tag*."""
    data = invite_bytes(
        method="INFO", cseq=cseq, to_tag=tag, body=body, branch=f"z9hG4bKinfo{cseq}",
        extra=extra,
    )
    return data.replace(b"application/sdp", content_type.encode())


class ParseTests(SynchronousTestCase):
    """The DTMF INFO bodies, parsed in one bounded pass."""

    def test_dtmf_relay(self) -> None:
        """application/dtmf-relay: the key in ``Signal``, other lines ignored, any line end."""
        relay = "application/dtmf-relay"
        self.assertEqual(parse_dtmf_info(relay, b"Signal=5\r\nDuration=160"), "5")
        self.assertEqual(parse_dtmf_info(relay, b"Duration=100\nsignal= #\n"), "#")
        self.assertEqual(parse_dtmf_info("application/dtmf-relay", b"Signal=10\r\n"), "*")
        self.assertEqual(parse_dtmf_info("application/dtmf-relay", b"Signal=a"), "A")
        for bad in (b"Duration=160", b"Signal=", b"Signal=99", b"Signal=55", b"Signal=\xff"):
            self.assertIsNone(parse_dtmf_info("application/dtmf-relay", bad), bad)

    def test_dtmf(self) -> None:
        """application/dtmf: the key alone (or its RFC 4733 event number)."""
        self.assertEqual(parse_dtmf_info("application/dtmf", b"5"), "5")
        self.assertEqual(parse_dtmf_info("application/dtmf", b"11\r\n"), "#")
        self.assertIsNone(parse_dtmf_info("application/dtmf", b"x"))

    def test_bounded(self) -> None:
        """A body over MAX_INFO_BODY is not read at all (nothing remote is unbounded)."""
        big = b"Duration=1\r\n" * MAX_INFO_BODY + b"Signal=5"
        self.assertIsNone(parse_dtmf_info("application/dtmf-relay", big))


class InfoTests(SynchronousTestCase):
    """Alice calls Bob, then sends INFO in the dialog."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.media = make_media_class()
        KeyCallee.instances = []
        self.bob = make_protocol(
            "sip:bob@example.com", self.clock, self.media, dialog_class=KeyCallee
        )
        self.transport = connect(self.bob)

    def establish(self) -> tuple[KeyCallee, str]:
        self.bob.dataReceived(invite_bytes())
        tag = written(self.transport)[-1].remote_tag
        self.bob.dataReceived(invite_bytes(method="ACK", branch="z9hG4bKa", body=b"", to_tag=tag))
        [callee] = KeyCallee.instances
        return callee, tag

    def send(self, data: bytes) -> Response:
        self.bob.dataReceived(data)
        [response] = written(self.transport)
        return response

    def test_dtmf_relay_digits_in_order(self) -> None:
        """RFC 6086 §2 (legacy INFO usage): application/dtmf-relay keys reach the session's
        dtmf_received in order, each INFO answered 200."""
        callee, tag = self.establish()
        for cseq, key in enumerate("15#", start=2):
            body = f"Signal={key}\r\nDuration=160\r\n".encode()
            response = self.send(info(tag, cseq, body))
            self.assertEqual((response.status_code, response.cseq), (200, (cseq, "INFO")))
        self.assertEqual(callee.session.digits, ["1", "5", "#"])

    def test_application_dtmf(self) -> None:
        """RFC 6086 §2: application/dtmf (the key alone) is a key press too."""
        callee, tag = self.establish()
        self.assertEqual(self.send(info(tag, 2, b"7", "application/dtmf")).status_code, 200)
        self.assertEqual(callee.session.digits, ["7"])

    def test_retransmitted_info_is_one_key(self) -> None:
        """RFC 6086 §2 / RFC 3261 §17.2.2: one INFO is one key: the same INFO again (over a
        reliable flow its server transaction has already ended) gets 200 and no second key."""
        callee, tag = self.establish()
        data = info(tag, 2)
        self.assertEqual(self.send(data).status_code, 200)
        self.assertEqual(self.send(data).status_code, 200)
        self.assertEqual(callee.session.digits, ["5"])

    def test_info_package_469(self) -> None:
        """RFC 6086 §4.2.2: an INFO naming an Info Package we do not support gets 469 Bad
        Info Package with our Recv-Info, which is empty (we support none)."""
        callee, tag = self.establish()
        response = self.send(info(tag, 2, b"5", "application/dtmf",
                                  extra="Info-Package: foo\r\n"))
        self.assertEqual(response.status_code, 469)
        self.assertIn("Recv-Info", response.headers)
        self.assertEqual(response.headers["Recv-Info"], "")
        self.assertIn(b"\r\nRecv-Info:", bytes(response))
        self.assertEqual(callee.session.digits, [])

    def test_other_body_415(self) -> None:
        """RFC 6086 §4.2.2 / RFC 3261 §21.4.16: INFO without a package and with a body we do
        not understand gets 415 listing the DTMF types in Accept."""
        callee, tag = self.establish()
        response = self.send(info(tag, 2, b"hello", "text/plain"))
        self.assertEqual(response.status_code, 415)
        self.assertEqual(response.headers["Accept"], "application/dtmf-relay, application/dtmf")
        self.assertEqual(callee.session.digits, [])

    def test_empty_info_200(self) -> None:
        """RFC 6086 §4.2.2 leaves a package-less INFO to the legacy usage: no body, 200."""
        _callee, tag = self.establish()
        self.assertEqual(self.send(info(tag, 2, b"")).status_code, 200)

    def test_oversized_and_keyless_bodies(self) -> None:
        """A DTMF body over the bound gets 413, one naming no key 400; nothing delivered."""
        callee, tag = self.establish()
        big = b"Duration=160\r\n" * (MAX_INFO_BODY // 10)
        self.assertEqual(self.send(info(tag, 2, big)).status_code, 413)
        self.assertEqual(self.send(info(tag, 3, b"Duration=160\r\n")).status_code, 400)
        self.assertEqual(callee.session.digits, [])

    def test_info_outside_dialog_481(self) -> None:
        """RFC 3261 §12.2.2: an INFO for no dialog gets 481."""
        self.assertEqual(self.send(info("nosuchtag", 2)).status_code, 481)

    def test_one_transport_per_call(self) -> None:
        """A key sent both as INFO and as RFC 4733 counts once: the media decides
        (``signalled_dtmf`` False once RFC 4733 delivered keys); the INFO still gets 200."""
        callee, tag = self.establish()
        media = self.media.created[0]
        media.signalled_dtmf = lambda: False
        self.assertEqual(self.send(info(tag, 2)).status_code, 200)
        self.assertEqual(callee.session.digits, [])

    def test_key_before_session_dropped(self) -> None:
        """An INFO key in the early dialog (no session yet) gets 200 and is not delivered."""
        self.bob.dialog_class = callee_class("ring")
        self.bob.dataReceived(invite_bytes())
        tag = written(self.transport)[-1].remote_tag
        self.assertEqual(self.send(info(tag, 2)).status_code, 200)

    def test_application_error_ends_call(self) -> None:
        """An exception in dtmf_received is the application's: logged, the call ends (BYE)."""
        callee, tag = self.establish()

        def broken(digit: str) -> None:
            raise RuntimeError("boom")

        callee.session.dtmf_received = broken
        self.bob.dataReceived(info(tag, 2))
        sent = written(self.transport)
        self.assertEqual(sent[0].status_code, 200)
        self.assertEqual([m.method for m in sent[1:] if isinstance(m, Request)], ["BYE"])
        self.flushLoggedErrors(RuntimeError)


def update(tag: str, cseq: int, body: bytes = b"", contact: str | None = None) -> bytes:
    """An UPDATE from Alice in the dialog with our *tag*."""
    data = reinvite(tag, method="UPDATE", cseq=cseq, body=body, branch=f"z9hG4bKupd{cseq}")
    if contact is not None:
        data = data.replace(b"<sip:alice@127.0.0.1:5099;transport=tls>", contact.encode())
    return data


class UpdateTests(SynchronousTestCase):
    """Alice calls Bob, then sends UPDATE."""

    setUp = InfoTests.setUp
    establish = InfoTests.establish
    send = InfoTests.send

    def test_session_refresh_without_body(self) -> None:
        """RFC 3311 §5.2: an UPDATE without a body (a session refresh) gets 200 with our
        Contact; it is a target refresh, so the peer's new Contact is used from then on."""
        callee, tag = self.establish()
        new = "<sip:alice@127.0.0.1:5100;transport=tls>"
        ok = self.send(update(tag, 2, contact=new))
        self.assertEqual((ok.status_code, ok.cseq), (200, (2, "UPDATE")))
        self.assertIn("sip:bob@", ok.headers["Contact"])
        self.assertEqual(ok.body, b"")
        self.assertEqual(callee.remote_contact, "sip:alice@127.0.0.1:5100;transport=tls")
        self.assertEqual(callee.session.changes, [])

    def test_offer_answered_in_200(self) -> None:
        """RFC 3311 §5.2: an offer in an UPDATE of a confirmed dialog is answered in the 200,
        like a re-INVITE's (RFC 3264 §8); the session hears of the change; no ACK follows."""
        callee, tag = self.establish()
        ok = self.send(update(tag, 2, HOLD_OFFER))
        self.assertEqual(ok.status_code, 200)
        self.assertEqual(ok.body, ANSWER + b"a=recvonly\r\n")
        self.assertEqual(ok.headers["Content-Type"], "application/sdp")
        self.assertEqual(callee.session.changes, ["recvonly"])
        self.assertEqual(self.bob.transaction_count, 0)
        ok = self.send(update(tag, 3, RESUME_OFFER))
        self.assertEqual(callee.session.changes, ["recvonly", "sendrecv"])

    def test_refused_offer_488_keeps_call(self) -> None:
        """RFC 3311 §5.2: an offer the media refuses gets its status (488); the call goes on."""
        callee, tag = self.establish()
        media = self.media.created[0]
        refused = self.send(update(tag, 2, OFFER))
        self.assertEqual(refused.status_code, 488)
        self.assertIn("no audio stream", refused.headers["Warning"])
        self.assertEqual(callee.session.changes, [])
        self.assertEqual(self.bob.dialog_count, 1)
        self.assertFalse(media.stopped)

    def test_glare_491(self) -> None:
        """RFC 3311 §5.2: an UPDATE offer while an offer of ours is unanswered (our offer in
        the 2xx of a re-INVITE without SDP, its answer due in the ACK) gets 491."""
        _callee, tag = self.establish()
        self.bob.dataReceived(reinvite(tag, body=b""))
        self.assertEqual(written(self.transport)[-1].status_code, 200)
        refused = self.send(update(tag, 3, HOLD_OFFER))
        self.assertEqual((refused.status_code, refused.cseq), (491, (3, "UPDATE")))

    def test_offer_while_theirs_pending_500(self) -> None:
        """RFC 3311 §5.2: an UPDATE offer while an offer of the peer's is not answered yet
        (a re-INVITE being answered) gets 500 with a Retry-After of 0-10 s."""
        _callee, tag = self.establish()
        media = self.media.created[0]
        media.hold_reinvites = True
        self.bob.dataReceived(reinvite(tag))
        written(self.transport)
        refused = self.send(update(tag, 3, RESUME_OFFER))
        self.assertEqual(refused.status_code, 500)
        self.assertIn(int(refused.headers["Retry-After"]), range(11))

    def test_second_update_while_first_pending_500(self) -> None:
        """RFC 3311 §5.2: a second UPDATE offer while the first is being answered: 500 with
        Retry-After; the first still gets its 200."""
        _callee, tag = self.establish()
        media = self.media.created[0]
        media.hold_reinvites = True
        self.bob.dataReceived(update(tag, 2, HOLD_OFFER))
        self.assertEqual(written(self.transport), [])
        refused = self.send(update(tag, 3, RESUME_OFFER))
        self.assertEqual((refused.status_code, refused.cseq), (500, (3, "UPDATE")))
        media.pending[0].callback(ANSWER + b"a=recvonly\r\n")
        ok = self.send(b"")
        self.assertEqual((ok.status_code, ok.cseq), (200, (2, "UPDATE")))

    def test_bye_while_update_pending_487(self) -> None:
        """RFC 3261 §15.1.2: BYE while an UPDATE offer is being answered: 200 to the BYE, 487
        to the UPDATE, the media work cancelled."""
        _callee, tag = self.establish()
        media = self.media.created[0]
        media.hold_reinvites = True
        self.bob.dataReceived(update(tag, 2, HOLD_OFFER))
        self.bob.dataReceived(reinvite(tag, method="BYE", cseq=3, body=b""))
        codes = sorted((m.status_code, m.cseq[1]) for m in written(self.transport))
        self.assertEqual(codes, [(200, "BYE"), (487, "UPDATE")])
        self.assertEqual(media.cancelled, [HOLD_OFFER])
        self.assertEqual(self.bob.dialog_count, 0)

    def test_early_update_offer_500_retry_after(self) -> None:
        """RFC 3311 §5.1/§5.2: in the early dialog the INVITE's offer is still unanswered (no
        reliable provisionals), so an UPDATE offer gets 500 with Retry-After; a session
        refresh without body gets 200; the call can still be answered."""
        self.bob.dialog_class = callee_class("ring")
        self.bob.dataReceived(invite_bytes())
        tag = written(self.transport)[-1].remote_tag
        refused = self.send(update(tag, 2, HOLD_OFFER))
        self.assertEqual(refused.status_code, 500)
        self.assertIn(int(refused.headers["Retry-After"]), range(11))
        self.assertEqual(self.send(update(tag, 3)).status_code, 200)
        [callee] = self.bob.dialog_class.instances
        callee.answer(session_class=ChangeSession)
        self.assertEqual(written(self.transport)[-1].status_code, 200)

    def test_other_content_type_415(self) -> None:
        """RFC 3261 §21.4.16: an UPDATE body that is not SDP gets 415 with Accept."""
        _callee, tag = self.establish()
        data = update(tag, 2, HOLD_OFFER).replace(b"application/sdp", b"text/plain")
        refused = self.send(data)
        self.assertEqual(refused.status_code, 415)
        self.assertEqual(refused.headers["Accept"], "application/sdp")


class OutboundUpdateTests(SynchronousTestCase):
    """We called Bob; Bob sends UPDATE."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.media = make_media_class()
        self.alice = make_protocol("sip:alice@example.com", self.clock, self.media)
        self.transport = connect(self.alice, 5090)

    def update_from_bob(self, dialog: Dialog, cseq: int, body: bytes) -> bytes:
        content = "Content-Type: application/sdp\r\n" if body else ""
        return (
            "UPDATE sip:alice@127.0.0.1:5090;transport=tls SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKbobu{cseq};rport\r\n"
            "Max-Forwards: 70\r\n"
            "From: <sip:bob@example.com>;tag=bobtag\r\n"
            f"To: <sip:alice@example.com>;tag={dialog.local_tag}\r\n"
            f"Call-ID: {dialog.call_id}\r\n"
            f"CSeq: {cseq} UPDATE\r\n"
            "Contact: <sip:bob@127.0.0.1:5088;transport=tls>\r\n"
            f"{content}Content-Length: {len(body)}\r\n\r\n"
        ).encode() + body

    def test_early_update_offer_491(self) -> None:
        """RFC 3311 §5.2: in our early dialog our INVITE's offer is unanswered (no reliable
        18x), so the callee's UPDATE offer is glare: 491."""
        dialog = Dialog(sip=self.alice)
        d = dialog.dial("sip:bob@example.com", session_class=ChangeSession)
        [invite] = written(self.transport)
        self.alice.dataReceived(respond_to(invite, 180))
        self.alice.dataReceived(self.update_from_bob(dialog, 1, HOLD_OFFER))
        responses = [m for m in written(self.transport) if isinstance(m, Response)]
        self.assertEqual([m.status_code for m in responses], [491])
        self.assertNoResult(d)

    def test_confirmed_update_offer_answered(self) -> None:
        """RFC 3311 §5.2: after the 2xx the callee's UPDATE offer is answered in the 200."""
        dialog = Dialog(sip=self.alice)
        d = dialog.dial("sip:bob@example.com", session_class=ChangeSession)
        [invite] = written(self.transport)
        self.alice.dataReceived(respond_to(invite, 200, body=ANSWER))
        self.successResultOf(d)
        written(self.transport)
        self.alice.dataReceived(self.update_from_bob(dialog, 1, HOLD_OFFER))
        [ok] = written(self.transport)
        self.assertEqual(ok.status_code, 200)
        self.assertIn(b"a=recvonly", ok.body)
        self.assertEqual(dialog.session.changes, ["recvonly"])


class EarlyUpdateTests(SynchronousTestCase):
    """RFC 3311 §5.1: an UPDATE offer in the early dialog once a reliable 18x with SDP and
    its PRACK completed the INVITE's offer/answer (RFC 3262 §5)."""

    setUp = InfoTests.setUp
    send = InfoTests.send

    def progress(self, offer: bool = True) -> tuple[Any, Response]:
        """Alice's INVITE (Require: 100rel) gets Bob's reliable 183 with SDP; Bob waits."""
        self.bob.dialog_class = reliable_callee("progress-only")
        body = {} if offer else {"body": b""}
        self.bob.dataReceived(invite_bytes(extra="Require: 100rel\r\n", **body))
        progress = written(self.transport)[-1]
        self.assertEqual((progress.status_code, progress.headers["Require"]), (183, "100rel"))
        [callee] = self.bob.dialog_class.instances
        return callee, progress

    def test_uas_early_update_offer_answered_after_prack(self) -> None:
        """RFC 3311 §5.1/§5.2: after the PRACK of our reliable 183 (our answer in it), an
        UPDATE offer before the 2xx is answered in the UPDATE's 200 and applied; the 200
        to the INVITE then carries no SDP (RFC 3261 §13.2.1: no new offer, no stale
        answer), and the session starts at the ACK with the UPDATE's media."""
        callee, progress = self.progress()
        tag = progress.remote_tag
        self.assertEqual(self.send(prack(tag, progress.headers["RSeq"])).status_code, 200)
        ok = self.send(update(tag, 3, HOLD_OFFER))
        self.assertEqual((ok.status_code, ok.cseq), (200, (3, "UPDATE")))
        self.assertEqual(ok.body, ANSWER + b"a=recvonly\r\n")
        self.assertEqual(ok.headers["Content-Type"], "application/sdp")
        [media] = self.media.created
        self.assertEqual(media.negotiated.direction, "recvonly")
        callee.answer(session_class=ChangeSession)
        [final] = written(self.transport)
        self.assertEqual((final.status_code, final.cseq, final.body), (200, (1, "INVITE"), b""))
        self.assertIsNone(final.headers.get("Content-Type"))
        self.bob.dataReceived(invite_bytes(method="ACK", branch="z9hG4bKa", body=b"", to_tag=tag))
        self.assertIsInstance(callee.session, ChangeSession)
        self.assertIs(media.session, callee.session)
        self.assertEqual(media.negotiated.direction, "recvonly")

    def test_uas_early_update_before_prack_500(self) -> None:
        """RFC 3311 §5.2: before the PRACK of the reliable 183 our answer is not
        acknowledged yet: an UPDATE offer gets 500 with Retry-After, as without 100rel."""
        _callee, progress = self.progress()
        refused = self.send(update(progress.remote_tag, 3, HOLD_OFFER))
        self.assertEqual(refused.status_code, 500)
        self.assertIn(int(refused.headers["Retry-After"]), range(11))

    def test_uas_early_update_glare_491(self) -> None:
        """RFC 3311 §5.2: our offer went in the reliable 183 (the INVITE had none) and its
        answer (in the PRACK) has not come: an UPDATE offer now is glare, 491."""
        _callee, progress = self.progress(offer=False)
        refused = self.send(update(progress.remote_tag, 3, HOLD_OFFER))
        self.assertEqual((refused.status_code, refused.cseq), (491, (3, "UPDATE")))


def reliable_callee(action: str) -> type:
    from tests.sip.test_reliable import callee

    return callee(action)


def prack(tag: str, rseq: str) -> bytes:
    from tests.sip.test_reliable import prack as reliable_prack

    return reliable_prack(tag, rseq)


class OutboundEarlyUpdateTests(SynchronousTestCase):
    """RFC 3311 §5.1 as UAC: we called Bob; his reliable 183 answered our offer."""

    setUp = OutboundUpdateTests.setUp
    update_from_bob = OutboundUpdateTests.update_from_bob

    def early(self, reliable: bool) -> tuple[Dialog, Any, Request]:
        dialog = Dialog(sip=self.alice)
        d = dialog.dial("sip:bob@example.com", session_class=ChangeSession)
        [invite] = written(self.transport)
        headers = [("Content-Type", "application/sdp"),
                   ("Contact", "<sip:bob@127.0.0.1:5088;transport=tls>")]
        if reliable:
            headers += [("Require", "100rel"), ("RSeq", "77")]
        self.alice.dataReceived(respond_to(invite, 183, body=ANSWER, headers=headers))
        sent = written(self.transport)
        self.assertEqual([m.method for m in sent], ["PRACK"] if reliable else [])
        self.assertIsInstance(dialog.session, ChangeSession)  # early media (RFC 3960)
        return dialog, d, invite

    def test_uac_early_update_offer_answered_after_reliable_183(self) -> None:
        """RFC 3311 §5.1/§5.2: the reliable 183's SDP answered our offer (RFC 3262 §5), so
        the callee's UPDATE offer before the 2xx is answered in the 200 and the session
        hears the change; the 2xx's SDP (the 183's answer again) does not undo it."""
        dialog, d, invite = self.early(reliable=True)
        self.alice.dataReceived(self.update_from_bob(dialog, 2, HOLD_OFFER))
        [ok] = written(self.transport)
        self.assertEqual((ok.status_code, ok.cseq), (200, (2, "UPDATE")))
        self.assertIn(b"a=recvonly", ok.body)
        self.assertEqual(dialog.session.changes, ["recvonly"])
        self.alice.dataReceived(respond_to(invite, 200, body=ANSWER, headers=[
            ("Content-Type", "application/sdp")]))
        self.assertIs(self.successResultOf(d), dialog)
        self.assertEqual(dialog.session.changes, ["recvonly"])
        self.assertEqual(dialog.media.negotiated.direction, "recvonly")

    def test_uac_early_update_after_unreliable_183_491(self) -> None:
        """RFC 3311 §5.2: an unreliable 183's SDP completes no offer/answer (RFC 3261
        §13.2.1), so our offer is still outstanding: the callee's UPDATE offer is 491."""
        dialog, d, _invite = self.early(reliable=False)
        self.alice.dataReceived(self.update_from_bob(dialog, 2, HOLD_OFFER))
        [refused] = written(self.transport)
        self.assertEqual(refused.status_code, 491)
        self.assertEqual(dialog.session.changes, [])
        self.assertNoResult(d)
