"""Tests for voiptwisted.sip.dialog: calls in and out, RFC 3261 §9, §12-§15, §22.

Two protocols talk in memory through ``twisted.test.iosim`` (no sockets); where
the exact bytes matter a single protocol is driven through a StringTransport.
Media is a fake ``CallMedia`` injected through ``protocol.media_class``.
"""

from __future__ import annotations

import types
from typing import Any

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogLevel, formatEvent
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.interfaces import IDialog
from voiptwisted.sip import dialog as dialog_module
from voiptwisted.sip.dialog import CallFailed, Dialog
from voiptwisted.sip.digest import Credentials
from voiptwisted.sip.framing import PING, PONG, StreamFramer
from voiptwisted.sip.message import Message, Request, Response
from voiptwisted.sip.protocol import SessionInitiationProtocol
from voiptwisted.sip.transaction import T1

OFFER = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
SAVP_OFFER = (
    OFFER + b"m=audio 10000 RTP/SAVP 8\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:KEY\r\n"
)
AVP_OFFER = OFFER + b"m=audio 10000 RTP/AVP 8\r\n"
ANSWER = OFFER + b"m=audio 20000 RTP/AVP 8\r\n"


#: The direction our answer takes for each offered one (RFC 3264 §6.1).
_MIRROR = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}


class FakeNegotiationFailed(ValueError):
    """Stands in for media.call.NegotiationFailed: carries status_code 488."""

    status_code = 488


def make_media_class() -> Any:
    """A fresh fake CallMedia class (its own instance list) implementing the contract."""

    class FakeMedia:
        created: list[FakeMedia] = []
        refuse_secure = False

        def __init__(self, local_sdp: bytes, secure: bool | None) -> None:
            self.local_sdp = local_sdp
            self.secure = secure
            self.session: Any = None
            self.answer: bytes | None = None
            self.started = False
            self.stopped = False
            self.negotiated = types.SimpleNamespace(direction="sendrecv")
            #: re-INVITE offers answered, and the Deferreds left pending (``hold_reinvites``).
            self.reoffers: list[bytes] = []
            self.pending: list[Deferred[bytes]] = []
            self.cancelled: list[bytes] = []
            self.hold_reinvites = False
            type(self).created.append(self)

        @classmethod
        def answer_offer(
            cls, config: Any, offer_sdp: bytes, local_host: str, *, srtp: str | None = None
        ) -> FakeMedia:
            if b"m=audio" not in offer_sdp:
                raise FakeNegotiationFailed("no audio stream")
            if cls.refuse_secure and b"RTP/SAVP" in offer_sdp:
                raise FakeNegotiationFailed("SRTP not supported")
            if srtp == "required" and b"RTP/SAVP" not in offer_sdp:
                raise FakeNegotiationFailed("SRTP required")
            return cls(ANSWER, None)

        @classmethod
        def create_offer(
            cls, config: Any, local_host: str, *, secure: bool | None = None
        ) -> FakeMedia:
            return cls(AVP_OFFER if secure is False else SAVP_OFFER, secure)

        def accept_answer(self, answer_sdp: bytes) -> None:
            if b"m=audio" not in answer_sdp:
                raise FakeNegotiationFailed("no audio in answer")
            self.answer = answer_sdp
            for theirs, ours in _MIRROR.items():
                if b"a=" + theirs.encode() in answer_sdp:
                    self.negotiated = types.SimpleNamespace(direction=ours)

        def reanswer(self, offer_sdp: bytes) -> bytes | Deferred[bytes]:
            """Answer a re-INVITE offer: the mirrored direction; pending when asked."""
            if b"m=audio" not in offer_sdp:
                raise FakeNegotiationFailed("no audio stream")
            self.reoffers.append(offer_sdp)
            if self.hold_reinvites:
                pending: Deferred[bytes] = Deferred(lambda _: self.cancelled.append(offer_sdp))
                self.pending.append(pending)
                return pending
            direction = "sendrecv"
            for theirs, ours in _MIRROR.items():
                if b"a=" + theirs.encode() in offer_sdp:
                    direction = ours
            self.negotiated = types.SimpleNamespace(direction=direction)
            self.local_sdp = ANSWER + f"a={direction}\r\n".encode()
            return self.local_sdp

        def reoffer(self) -> bytes:
            self.local_sdp = AVP_OFFER + b"a=sendrecv\r\n"
            return self.local_sdp

        def start(self, session: Any) -> None:
            self.started = True
            self.session = session
            session.start()

        def stop(self) -> None:
            if not self.stopped:
                self.stopped = True
                if self.session is not None:
                    self.session.stop()

    FakeMedia.created = []
    return FakeMedia


class FakeSession:
    """Records start/stop; raises in start() when asked to."""

    def __init__(self, dialog: Any, fail: bool = False, **kwargs: Any) -> None:
        self.dialog = dialog
        self.fail = fail
        self.kwargs = kwargs
        self.started = 0
        self.stopped = 0

    def start(self) -> None:
        if self.fail:
            raise RuntimeError("session refused to start")
        self.started += 1

    def stop(self) -> None:
        self.stopped += 1


class CalleeDialog(Dialog):
    """Inbound dialog whose behaviour is picked per test with ``action``."""

    action = "answer"
    instances: list[CalleeDialog] = []
    hangups = 0

    def call_received(self) -> None:
        type(self).instances.append(self)
        if self.action == "answer":
            self.ringing()
            self.answer(session_class=FakeSession, colour="blue")
        elif self.action == "ring":
            self.ringing()
        elif self.action == "reject":
            self.reject()
        elif self.action == "decline":
            self.reject(603)
        elif self.action == "raise":
            raise RuntimeError("application bug")
        elif self.action == "nothing":
            pass

    def hangup_received(self) -> None:
        type(self).hangups += 1
        if self.action == "raise-on-hangup":
            raise RuntimeError("teardown bug")


class CallerDialog(Dialog):
    hangups = 0

    def hangup_received(self) -> None:
        CallerDialog.hangups += 1


def callee_class(action: str) -> type[CalleeDialog]:
    return type("Callee", (CalleeDialog,), {"action": action, "instances": [], "hangups": 0})


CONFIG = types.SimpleNamespace(srtp="optional", public_host=None)
#: Timers an established call keeps: its session timer's refresh and expiry (RFC 4028 §10).
SESSION_TIMERS = 2


def make_protocol(
    aor: str, clock: task.Clock, media: Any, **kwargs: Any
) -> SessionInitiationProtocol:
    kwargs.setdefault("media_config", CONFIG)
    return SessionInitiationProtocol(aor=aor, reactor=clock, media_class=media, **kwargs)


def connect(proto: SessionInitiationProtocol, port: int = 5070) -> StringTransport:
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", port),
        peerAddress=IPv4Address("TCP", "127.0.0.1", 5061),
    )
    proto.makeConnection(transport)
    return transport


def written(transport: StringTransport) -> list[Any]:
    """Every SIP message written so far (keepalives skipped); clears the transport."""
    data = transport.value()
    transport.clear()
    return [Message.parse(f) for f in StreamFramer().feed(data) if f not in (PING, PONG)]


def invite_bytes(
    *,
    branch: str = "z9hG4bKinv1",
    call_id: str = "call-1@example.com",
    cseq: int = 1,
    body: bytes = AVP_OFFER,
    extra: str = "",
    method: str = "INVITE",
    to_tag: str = "",
    cseq_method: str | None = None,
) -> bytes:
    to = "<sip:bob@example.com>" + (f";tag={to_tag}" if to_tag else "")
    content_type = "Content-Type: application/sdp\r\n" if body else ""
    return (
        f"{method} sip:bob@127.0.0.1:5070;transport=tls SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS 127.0.0.1:5061;branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        'From: "Alice" <sip:alice@example.com>;tag=alicetag\r\n'
        f"To: {to}\r\n"
        f"Call-ID: {call_id}\r\n"
        f"CSeq: {cseq} {cseq_method or method}\r\n"
        "Contact: <sip:alice@127.0.0.1:5099;transport=tls>\r\n"
        f"{extra}{content_type}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def respond_to(
    request: Request,
    code: int,
    *,
    to_tag: str | None = "bobtag",
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
) -> bytes:
    extra = list(headers or [])
    if 200 <= code < 300:
        extra.append(("Contact", "<sip:bob@127.0.0.1:5088;transport=tls>"))
    return bytes(Response.from_request(request, code, to_tag=to_tag, headers=extra, body=body))


class CallPair(SynchronousTestCase):
    """Alice (client side) and Bob (server side) connected in memory."""

    callee_action = "answer"

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.media = make_media_class()
        self.callee = callee_class(self.callee_action)
        CallerDialog.hangups = 0
        self.alice, self.bob, self.pump = iosim.connectedServerAndClient(
            lambda: make_protocol(
                "sip:bob@example.com", self.clock, self.media, dialog_class=self.callee
            ),
            lambda: make_protocol("sip:alice@example.com", self.clock, self.media),
            clock=self.clock,
        )

    def dial(self, **kwargs: Any) -> tuple[CallerDialog, Any]:
        dialog = CallerDialog(sip=self.alice)
        d = dialog.dial("sip:bob@example.com", session_class=FakeSession, **kwargs)
        self.pump.flush()
        return dialog, d

    def assertNothingLeft(self) -> None:
        for proto in (self.alice, self.bob):
            self.assertEqual(
                (proto.dialog_count, proto.transaction_count, proto.pending_timer_count),
                (0, 0, 0),
            )
        self.assertEqual(self.clock.getDelayedCalls(), [])
        for media in self.media.created:
            self.assertTrue(media.stopped, media)


class AnsweredCallTests(CallPair):
    def test_call_answered(self) -> None:
        """RFC 3261 §13: INVITE/200/ACK in memory; both sessions start after the handshake."""
        dialog, d = self.dial(volume=3)
        self.assertIs(self.successResultOf(d), dialog)
        self.assertTrue(IDialog.providedBy(dialog))
        [callee] = self.callee.instances
        self.assertEqual(callee.call_id, dialog.call_id)
        self.assertEqual(callee.remote_tag, dialog.local_tag)
        self.assertEqual(callee.local_tag, dialog.remote_tag)
        self.assertEqual(dialog.remote_party.tag, callee.local_tag)
        self.assertEqual(callee.remote_party.user, "alice")
        self.assertEqual(dialog.session.started, 1)
        self.assertEqual(dialog.session.kwargs, {"volume": 3})
        self.assertEqual(callee.session.started, 1)
        self.assertEqual(callee.session.kwargs, {"colour": "blue"})
        self.assertIs(callee.session.dialog, callee)
        self.assertEqual(dialog.media.answer, ANSWER)
        self.assertEqual(self.alice.dialog_count, 1)
        self.assertEqual(self.bob.dialog_count, 1)
        # ACK stopped the 2xx retransmission; only the session timer runs
        self.assertEqual(self.bob.pending_timer_count, SESSION_TIMERS)

    def test_caller_hangs_up(self) -> None:
        """RFC 3261 §15.1: caller BYE; callee answers 200, stops media, hangup_received."""
        dialog, _d = self.dial()
        [callee] = self.callee.instances
        bye = dialog.bye()
        self.assertIsNone(dialog.media)  # media stops at once
        self.pump.flush()
        self.assertIsNone(self.successResultOf(bye))
        self.assertEqual(self.callee.hangups, 1)
        self.assertEqual(callee.session.stopped, 1)
        self.assertEqual(dialog.session.stopped, 1)
        self.assertEqual(CallerDialog.hangups, 0)
        self.assertNothingLeft()

    def test_callee_hangs_up(self) -> None:
        """RFC 3261 §15.1: BYE from the callee uses the caller's Contact and CSeq+1 (§12.2.1.1)."""
        dialog, _d = self.dial()
        [callee] = self.callee.instances
        first_cseq = callee.outbound_cseq
        done = callee.bye()
        self.assertEqual(callee.outbound_cseq, first_cseq + 1)
        self.pump.flush()
        self.successResultOf(done)
        self.assertEqual(CallerDialog.hangups, 1)
        self.assertEqual(dialog.session.stopped, 1)
        self.assertNothingLeft()

    def test_second_bye_is_harmless(self) -> None:
        dialog, _ = self.dial()
        first, second = dialog.bye(), dialog.bye()
        self.pump.flush()
        self.successResultOf(first)
        self.successResultOf(second)
        self.successResultOf(dialog.bye())
        self.assertNothingLeft()

    def test_hundred_sequential_calls_leave_nothing(self) -> None:
        """Issue 3: 100 calls in a row leave no dialog, transaction or timer behind."""
        for i in range(100):
            dialog, d = self.dial()
            self.successResultOf(d)
            (dialog if i % 2 else self.callee.instances[-1]).bye()
            self.pump.flush()
        self.assertEqual(len(self.callee.instances), 100)
        self.assertEqual(len(self.media.created), 200)
        self.assertNothingLeft()

    def test_established_call_survives_connection_loss(self) -> None:
        """Issue 3 item 3: a call whose flow died keeps its media until BYE or timeout."""
        dialog, _ = self.dial()
        self.alice.transport.loseConnection()
        self.pump.flush()
        self.assertFalse(dialog.media.stopped)
        self.assertEqual(self.alice.dialog_count, 1)
        done = dialog.bye()
        self.successResultOf(done)
        self.assertEqual(self.alice.dialog_count, 0)


class RejectedCallTests(CallPair):
    callee_action = "reject"

    def test_reject_default_486(self) -> None:
        """RFC 3261 §13.3.1.3: reject() sends 486; the caller's Deferred fails with CallFailed."""
        _, d = self.dial()
        failure = self.failureResultOf(d, CallFailed)
        self.assertEqual(failure.value.status_code, 486)
        self.assertEqual(str(failure.value), "486 Busy Here")
        self.assertNothingLeft()


class DeclinedCallTests(CallPair):
    callee_action = "decline"

    def test_reject_603(self) -> None:
        _, d = self.dial()
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 603)
        self.assertNothingLeft()


class CancelTests(CallPair):
    callee_action = "ring"

    def test_cancel_after_ringing(self) -> None:
        """RFC 3261 §9.1/§9.2: CANCEL after a provisional; 200 to CANCEL, 487 to the INVITE."""
        dialog, d = self.dial()
        self.assertNoResult(d)
        [callee] = self.callee.instances
        self.assertEqual(dialog.remote_tag, callee.local_tag)  # early dialog from the 180
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.pump.flush()
        self.assertEqual(self.callee.hangups, 1)
        self.assertNothingLeft()

    def test_bye_before_answer_cancels(self) -> None:
        dialog, d = self.dial()
        self.successResultOf(dialog.bye())
        self.failureResultOf(d, CancelledError)
        self.pump.flush()
        self.assertNothingLeft()

    def test_callee_bye_before_answer_rejects(self) -> None:
        """An unanswered inbound call ended with bye() is rejected (480)."""
        _, d = self.dial()
        self.successResultOf(self.callee.instances[0].bye())
        self.pump.flush()
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 480)
        self.assertNothingLeft()

    def test_answer_later(self) -> None:
        _, d = self.dial()
        self.clock.advance(60)  # ringing for a minute: no Timer B once Proceeding (§17.1.1.2)
        self.assertNoResult(d)
        self.callee.instances[0].answer(session_class=FakeSession)
        self.pump.flush()
        self.successResultOf(d)

    def test_pending_dial_fails_on_connection_loss(self) -> None:
        _, d = self.dial()
        self.alice.transport.loseConnection()
        self.pump.flush()
        self.failureResultOf(d, ConnectionDone)
        self.assertEqual(self.alice.dialog_count, 0)
        self.assertEqual(self.bob.dialog_count, 0)
        self.assertEqual(self.callee.hangups, 1)


class WhenEndedTests(CallPair):
    """``Dialog.when_ended()``: fires once the dialog is TERMINATED, whoever ended it."""

    def test_fires_when_we_hang_up(self) -> None:
        dialog, _ = self.dial()
        ended = dialog.when_ended()
        self.assertNoResult(ended)
        dialog.bye()
        self.pump.flush()
        self.assertIsNone(self.successResultOf(ended))

    def test_fires_when_they_hang_up(self) -> None:
        dialog, _ = self.dial()
        ended = dialog.when_ended()
        callee_ended = self.callee.instances[0].when_ended()
        self.callee.instances[0].bye()
        self.assertNoResult(ended)
        self.pump.flush()
        self.successResultOf(ended)
        self.successResultOf(callee_ended)

    def test_fires_when_dial_fails(self) -> None:
        """A refused call ends the dialog too; when_ended succeeds (the dial Deferred fails)."""
        self.callee.action = "reject"
        dialog = CallerDialog(sip=self.alice)
        d = dialog.dial("sip:bob@example.com", session_class=FakeSession)
        ended = dialog.when_ended()
        self.assertNoResult(ended)
        self.pump.flush()
        self.failureResultOf(d, CallFailed)
        self.assertIsNone(self.successResultOf(ended))

    def test_fires_at_once_when_already_ended_and_each_waiter_gets_its_own(self) -> None:
        dialog, _ = self.dial()
        first, second = dialog.when_ended(), dialog.when_ended()
        self.assertIsNot(first, second)
        dialog.bye()
        self.pump.flush()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertIsNone(self.successResultOf(dialog.when_ended()))

    def test_never_fires_while_the_call_is_up(self) -> None:
        dialog, _ = self.dial()
        ended = dialog.when_ended()
        for _ in range(36):  # the session timer refreshes it meanwhile (RFC 4028 §10)
            self.clock.advance(100)
            self.pump.flush()
        self.assertNoResult(ended)
        dialog.bye()
        self.pump.flush()


class AppErrorTests(CallPair):
    callee_action = "raise"

    def test_exception_in_call_received_gives_500(self) -> None:
        """IDialog: an application exception before answer ends that call with 500."""
        _, d = self.dial()
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertNothingLeft()
        self.assertFalse(self.bob.transport.disconnecting)


class HangupErrorTests(CallPair):
    callee_action = "raise-on-hangup"

    def test_exception_in_hangup_received_is_contained(self) -> None:
        self.callee.action = "answer"
        dialog, _ = self.dial()
        self.callee.action = "raise-on-hangup"
        dialog.bye()
        self.pump.flush()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertNothingLeft()


class SessionErrorTests(CallPair):
    def test_outbound_session_failure_sends_bye(self) -> None:
        """An exception in the caller's session start ends the call with BYE."""
        _, d = self.dial(fail=True)
        self.failureResultOf(d, RuntimeError)
        self.pump.flush()
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(self.callee.hangups, 1)
        self.assertNothingLeft()

    def test_inbound_session_failure_sends_bye(self) -> None:
        """After answer, an exception in the callee's session ends the call with BYE."""

        def answer_failing(self: Dialog) -> None:
            self.answer(session_class=FakeSession, fail=True)

        self.callee.call_received = answer_failing
        _, d = self.dial()
        self.successResultOf(d)
        self.pump.flush()
        self.flushLoggedErrors(RuntimeError)
        self.assertEqual(CallerDialog.hangups, 1)
        self.assertNothingLeft()


class NegotiationTests(CallPair):
    def test_no_common_media_gives_488(self) -> None:
        """RFC 3264 §6 via CallMedia.answer_offer: NegotiationFailed -> 488."""
        self.media.refuse_secure = True
        self.bob.media_config = types.SimpleNamespace(srtp="optional", public_host=None)
        self.alice.media_config = types.SimpleNamespace(srtp="required", public_host=None)
        _, d = self.dial()
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 488)
        self.assertNothingLeft()

    def test_srtp_optional_falls_back_to_rtp(self) -> None:
        """Issue 5 item 3: 488 to an SRTP offer with policy "optional" -> retry with RTP/AVP."""
        self.media.refuse_secure = True
        dialog, d = self.dial()
        self.successResultOf(d)
        self.assertIs(dialog.media.secure, False)
        self.assertEqual(dialog.outbound_cseq, 2)
        self.assertTrue(self.media.created[0].stopped)  # the refused offer's port released


class CalleeOnTransport(SynchronousTestCase):
    """Bob, answering calls, on a StringTransport with a task.Clock."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.media = make_media_class()
        self.callee = callee_class("answer")
        self.bob = make_protocol(
            "sip:bob@example.com", self.clock, self.media, dialog_class=self.callee
        )
        self.bob_t = connect(self.bob)


class TimerTests(CalleeOnTransport):
    """Single protocols on a StringTransport: exact messages and timers."""

    def setUp(self) -> None:
        super().setUp()
        # Realms the tests' proxies challenge with (issue 14: only allowed realms are answered).
        credentials = Credentials("alice", "secret", realms=("example.com", "proxy"))
        self.alice = make_protocol(
            "sip:alice@example.com", self.clock, self.media, credentials=credentials
        )
        self.alice_t = connect(self.alice, 5090)

    def test_2xx_retransmitted_until_ack(self) -> None:
        """RFC 3261 §13.3.1.4: 200 resent at T1, 2T1, 4T1 ... capped at T2 until the ACK."""
        self.bob.dataReceived(invite_bytes())
        sent = written(self.bob_t)
        self.assertEqual([m.status_code for m in sent], [100, 180, 200])
        ok = sent[-1]
        self.assertEqual(ok.body, ANSWER)
        self.assertIn(";ob>", ok.headers["Contact"])
        [callee] = self.callee.instances
        self.assertIsNone(callee.session)  # session waits for the ACK
        gaps = []
        elapsed = 0.0
        for _ in range(6):
            step = 0.0
            while not written(self.bob_t):
                self.clock.advance(0.25)
                step += 0.25
            gaps.append(step)
            elapsed += step
        self.assertEqual(gaps, [T1, 2 * T1, 4 * T1, 4.0, 4.0, 4.0])
        ack = invite_bytes(method="ACK", branch="z9hG4bKack", body=b"", to_tag=ok.remote_tag)
        self.bob.dataReceived(ack)
        self.assertEqual(callee.session.started, 1)
        self.assertEqual(self.bob.pending_timer_count, SESSION_TIMERS)
        self.clock.advance(100)
        self.assertEqual(written(self.bob_t), [])

    def test_no_ack_hangs_up(self) -> None:
        """RFC 3261 §13.3.1.4: no ACK within 64*T1 -> session ended with BYE."""
        self.bob.dataReceived(invite_bytes())
        written(self.bob_t)
        self.clock.advance(64 * T1)
        byes = [m for m in written(self.bob_t) if isinstance(m, Request)]
        self.assertEqual([m.method for m in byes], ["BYE"])
        bye = byes[0]
        self.assertEqual(bye.uri, "sip:alice@127.0.0.1:5099;transport=tls")
        self.assertEqual(bye.remote_tag, "alicetag")
        self.assertTrue(self.media.created[0].stopped)
        self.bob.dataReceived(respond_to(bye, 200, to_tag=None))
        self.assertEqual((self.bob.dialog_count, self.bob.pending_timer_count), (0, 0))

    def test_bye_waits_for_ack(self) -> None:
        """RFC 3261 §15: the callee must not send BYE before the ACK of its 2xx."""
        self.bob.dataReceived(invite_bytes())
        ok = written(self.bob_t)[-1]
        done = self.callee.instances[0].bye()
        self.assertEqual(written(self.bob_t), [])
        self.bob.dataReceived(
            invite_bytes(method="ACK", branch="z9hG4bKa", body=b"", to_tag=ok.remote_tag)
        )
        [bye] = written(self.bob_t)
        self.assertEqual(bye.method, "BYE")
        self.assertNoResult(done)
        self.bob.dataReceived(respond_to(bye, 200, to_tag=None))
        self.successResultOf(done)

    def test_route_set_uas(self) -> None:
        """RFC 3261 §12.1.1: Record-Route copied into the 2xx; route set in order;
        §12.2.1.1: in-dialog BYE goes to the Contact with the route set as Route."""
        rr = "Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
        self.bob.dataReceived(invite_bytes(extra=rr))
        ok = written(self.bob_t)[-1]
        self.assertEqual(
            ok.headers.getlist("Record-Route"),
            ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"],
        )
        [callee] = self.callee.instances
        self.assertEqual(callee.route_set, ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"])
        self.bob.dataReceived(
            invite_bytes(method="ACK", branch="z9hG4bKa", body=b"", to_tag=ok.remote_tag)
        )
        callee.bye()
        [bye] = written(self.bob_t)
        self.assertEqual(bye.uri, "sip:alice@127.0.0.1:5099;transport=tls")
        self.assertEqual(
            bye.headers.getlist("Route"), ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        )
        self.assertEqual(bye.cseq, (callee.outbound_cseq, "BYE"))

    def test_sips_record_route_gives_sips_contact(self) -> None:
        """RFC 3261 §12.1.1: when the top Record-Route of the INVITE is a SIPS URI, the
        Contact of the response MUST be a SIPS URI (our AOR is sip:, the flow is TLS)."""
        self.bob.is_secure = True
        self.bob.dataReceived(invite_bytes(extra="Record-Route: <sips:p1.example.com;lr>\r\n"))
        ok = written(self.bob_t)[-1]
        self.assertEqual(ok.status_code, 200)
        self.assertEqual(ok.headers["Contact"], "<sips:bob@127.0.0.1:5070;ob>")
        self.bob.dataReceived(invite_bytes(branch="z9hG4bKplain", call_id="call-2@example.com"))
        plain = written(self.bob_t)[-1]
        self.assertEqual(plain.headers["Contact"], "<sip:bob@127.0.0.1:5070;transport=tls;ob>")

    def test_strict_router(self) -> None:
        """RFC 3261 §12.2.1.1: a strict first route becomes the Request-URI."""
        self.bob.dataReceived(invite_bytes(extra="Record-Route: <sip:strict.example.com>\r\n"))
        ok = written(self.bob_t)[-1]
        self.bob.dataReceived(
            invite_bytes(method="ACK", branch="z9hG4bKa", body=b"", to_tag=ok.remote_tag)
        )
        self.callee.instances[0].bye()
        [bye] = written(self.bob_t)
        self.assertEqual(bye.uri, "sip:strict.example.com")
        self.assertEqual(
            bye.headers.getlist("Route"), ["<sip:alice@127.0.0.1:5099;transport=tls>"]
        )

    def test_cseq_out_of_order(self) -> None:
        """RFC 3261 §12.2.2: an in-dialog request with a lower CSeq gets 500."""
        self.bob.dataReceived(invite_bytes(cseq=5))
        ok = written(self.bob_t)[-1]
        tag = ok.remote_tag
        self.bob.dataReceived(
            invite_bytes(method="ACK", branch="z9hG4bKa", body=b"", cseq=5, to_tag=tag)
        )
        self.bob.dataReceived(
            invite_bytes(method="BYE", branch="z9hG4bKb", body=b"", cseq=4, to_tag=tag)
        )
        [resp] = written(self.bob_t)
        self.assertEqual(resp.status_code, 500)
        self.assertEqual(self.bob.dialog_count, 1)

    def test_reinvite_refused_keeps_call(self) -> None:
        """RFC 3261 §14.2: a refused re-INVITE leaves the session as it was."""
        self.bob.dataReceived(invite_bytes())
        tag = written(self.bob_t)[-1].remote_tag
        self.bob.dataReceived(invite_bytes(method="ACK", branch="z9hG4bKa", body=b"", to_tag=tag))
        self.bob.dataReceived(invite_bytes(branch="z9hG4bKre", cseq=2, to_tag=tag, body=OFFER))
        self.assertEqual([m.status_code for m in written(self.bob_t)], [100, 488])
        self.bob.dataReceived(
            invite_bytes(method="ACK", branch="z9hG4bKre", body=b"", cseq=2, to_tag=tag)
        )
        self.assertEqual(self.bob.transaction_count, 0)
        self.assertEqual(self.bob.dialog_count, 1)
        self.assertEqual(self.callee.instances[0].session.stopped, 0)

    def test_late_offer(self) -> None:
        """RFC 3261 §13.2.1: INVITE without SDP -> offer in the 200, answer in the ACK."""
        self.bob.dataReceived(invite_bytes(body=b""))
        ok = written(self.bob_t)[-1]
        self.assertEqual(ok.body, SAVP_OFFER)
        self.bob.dataReceived(
            invite_bytes(method="ACK", branch="z9hG4bKa", body=ANSWER, to_tag=ok.remote_tag)
        )
        self.assertEqual(self.media.created[0].answer, ANSWER)
        self.assertEqual(self.callee.instances[0].session.started, 1)

    def dial(self, target: str = "sip:bob@example.com") -> tuple[Dialog, Any, Request]:
        dialog = Dialog(sip=self.alice)
        d = dialog.dial(target, session_class=FakeSession)
        [invite] = written(self.alice_t)
        return dialog, d, invite

    def test_invite_format(self) -> None:
        """RFC 3261 §8.1.1: To, From with tag, Call-ID, CSeq, Max-Forwards, Via (branch, rport),
        Contact; SDP offer body."""
        dialog, _, invite = self.dial()
        self.assertEqual(invite.method, "INVITE")
        self.assertEqual(invite.uri, "sip:bob@example.com")
        self.assertEqual(invite.local_tag, dialog.local_tag)
        self.assertIsNone(invite.remote_tag)
        self.assertEqual(invite.cseq, (1, "INVITE"))
        self.assertEqual(invite.headers["Max-Forwards"], "70")
        self.assertTrue(invite.branch.startswith("z9hG4bK"))
        self.assertIs(invite.top_via.rport, True)
        self.assertEqual(invite.headers["Content-Type"], "application/sdp")
        self.assertEqual(invite.body, SAVP_OFFER)
        self.assertTrue(invite.headers["User-Agent"].startswith("voiptwisted/"))

    def test_sips_target_gives_sips_contact(self) -> None:
        """RFC 3261 §8.1.1.8: a SIPS Request-URI MUST come with a SIPS Contact."""
        self.alice.is_secure = True
        _, _, invite = self.dial("sips:bob@example.com")
        self.assertEqual(invite.headers["Contact"], "<sips:alice@127.0.0.1:5090;ob>")
        _, _, plain = self.dial("sip:carol@example.com")
        self.assertEqual(plain.headers["Contact"], "<sip:alice@127.0.0.1:5090;transport=tls;ob>")

    def test_dial_rejects_bad_target(self) -> None:
        dialog = Dialog(sip=self.alice)
        self.assertRaises(ValueError, dialog.dial, "http://example.com", session_class=FakeSession)

    def test_route_set_uac_and_ack(self) -> None:
        """RFC 3261 §12.1.2: UAC route set = Record-Route reversed; §13.2.2.4: ACK for the 2xx
        is a new transaction (new branch) with the INVITE's CSeq number, sent to the Contact."""
        dialog, d, invite = self.dial()
        self.alice.dataReceived(respond_to(invite, 180))
        self.assertEqual(dialog.remote_tag, "bobtag")
        rr = [("Record-Route", "<sip:p1.example.com;lr>, <sip:p2.example.com;lr>")]
        self.alice.dataReceived(respond_to(invite, 200, body=ANSWER, headers=rr))
        self.successResultOf(d)
        [ack] = written(self.alice_t)
        self.assertEqual(ack.method, "ACK")
        self.assertNotEqual(ack.branch, invite.branch)
        self.assertEqual(ack.cseq, (1, "ACK"))
        self.assertEqual(ack.uri, "sip:bob@127.0.0.1:5088;transport=tls")
        self.assertEqual(
            ack.headers.getlist("Route"), ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
        )
        self.assertEqual(dialog.route_set, ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"])
        # §13.2.2.4: a retransmitted 2xx is ACKed again
        self.alice.dataReceived(respond_to(invite, 200, body=ANSWER, headers=rr))
        [again] = written(self.alice_t)
        self.assertEqual(bytes(again), bytes(ack))

    def test_forked_2xx_acked_and_ended(self) -> None:
        """RFC 3261 §13.2.2.4: a 2xx from a second fork is ACKed, then that dialog gets BYE."""
        dialog, d, invite = self.dial()
        self.alice.dataReceived(respond_to(invite, 200, body=ANSWER))
        self.successResultOf(d)
        written(self.alice_t)
        self.alice.dataReceived(respond_to(invite, 200, to_tag="forktag", body=ANSWER))
        ack, bye = written(self.alice_t)
        self.assertEqual((ack.method, ack.remote_tag, ack.cseq), ("ACK", "forktag", (1, "ACK")))
        self.assertEqual((bye.method, bye.remote_tag, bye.cseq), ("BYE", "forktag", (2, "BYE")))
        self.alice.dataReceived(respond_to(bye, 200, to_tag=None))
        self.assertEqual(dialog.remote_tag, "bobtag")
        self.assertEqual(self.alice.dialog_count, 1)
        self.assertEqual(
            (self.alice.transaction_count, self.alice.pending_timer_count), (0, SESSION_TIMERS)
        )

    def test_dial_timer_b(self) -> None:
        """RFC 3261 §17.1.1.2: no response at all -> Timer B -> CallFailed 408."""
        _, d, _ = self.dial()
        self.clock.advance(64 * T1)
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 408)
        self.assertEqual((self.alice.dialog_count, self.alice.pending_timer_count), (0, 0))
        self.assertTrue(self.media.created[0].stopped)

    def test_dial_401_retry(self) -> None:
        """RFC 3261 §22.2: 401 -> ACK, then INVITE again with Authorization and CSeq+1."""
        _dialog, d, invite = self.dial()
        challenge = [("WWW-Authenticate", 'Digest realm="example.com", nonce="abc", qop="auth"')]
        self.alice.dataReceived(respond_to(invite, 401, headers=challenge))
        ack, retry = written(self.alice_t)
        self.assertEqual((ack.method, ack.branch), ("ACK", invite.branch))
        self.assertEqual(retry.method, "INVITE")
        self.assertEqual(retry.cseq, (2, "INVITE"))
        self.assertEqual(retry.call_id, invite.call_id)
        self.assertEqual(retry.local_tag, invite.local_tag)
        self.assertNotEqual(retry.branch, invite.branch)
        self.assertIn('username="alice"', retry.headers["Authorization"])
        self.assertIn('realm="example.com"', retry.headers["Authorization"])
        # a second challenge is a failure, not a loop
        self.alice.dataReceived(respond_to(retry, 401, headers=challenge))
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 401)
        self.assertEqual(self.alice.dialog_count, 0)

    def test_malformed_challenge_is_skipped(self) -> None:
        """RFC 3261 §22.2 / RFC 7616 §3.7: a malformed or non-Digest challenge before a
        usable one is skipped (as registration does), not the end of the call."""
        _, d, invite = self.dial()
        challenges = [
            ("WWW-Authenticate", 'Digest realm="unterminated, nonce="n0'),
            ("WWW-Authenticate", 'Basic realm="example.com"'),
            ("WWW-Authenticate", 'Digest realm="example.com", nonce="good", qop="auth"'),
        ]
        self.alice.dataReceived(respond_to(invite, 401, headers=challenges))
        retry = written(self.alice_t)[-1]
        self.assertEqual(retry.method, "INVITE")
        self.assertIn('nonce="good"', retry.headers["Authorization"])
        self.alice.dataReceived(respond_to(retry, 200, body=ANSWER))
        self.successResultOf(d)

    def test_only_malformed_challenges_fail_the_call(self) -> None:
        _, d, invite = self.dial()
        challenges = [("Proxy-Authenticate", 'Digest realm="unterminated')]
        self.alice.dataReceived(respond_to(invite, 407, headers=challenges))
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 407)
        self.assertEqual(self.alice.dialog_count, 0)

    def test_dial_407_retry(self) -> None:
        """RFC 3261 §22.3: 407 is answered with Proxy-Authorization."""
        _, d, invite = self.dial()
        challenge = [("Proxy-Authenticate", 'Digest realm="proxy", nonce="n1", qop="auth"')]
        self.alice.dataReceived(respond_to(invite, 407, headers=challenge))
        retry = written(self.alice_t)[-1]
        self.assertIn("Proxy-Authorization", retry.headers)
        self.alice.dataReceived(respond_to(retry, 200, body=ANSWER))
        self.successResultOf(d)

    def test_ack_for_2xx_carries_the_invite_credentials(self) -> None:
        """RFC 3261 §13.2.2.4: the ACK for a 2xx MUST contain the same credentials as the
        INVITE (and the INVITE's CSeq number with method ACK)."""
        _, d, invite = self.dial()
        challenge = [("Proxy-Authenticate", 'Digest realm="proxy", nonce="n1", qop="auth"')]
        self.alice.dataReceived(respond_to(invite, 407, headers=challenge))
        retry = written(self.alice_t)[-1]
        self.alice.dataReceived(respond_to(retry, 200, body=ANSWER))
        self.successResultOf(d)
        [ack] = written(self.alice_t)
        self.assertEqual(ack.cseq, (2, "ACK"))
        self.assertEqual(
            ack.headers.getlist("Proxy-Authorization"),
            retry.headers.getlist("Proxy-Authorization"),
        )
        self.assertNotIn("Authorization", ack.headers)

    def dial_challenged(
        self, code: int, *values: str, credentials: Credentials | None = None
    ) -> tuple[Any, Request, list[Any], list[str]]:
        """Dial, answer the INVITE with *code* and *values* as challenges; return the dial
        Deferred, the INVITE, every message Alice sent after it, and the warnings logged."""
        if credentials is not None:
            self.alice.credentials = credentials
        events: list[dict] = []
        self.patch(dialog_module, "log", Logger(observer=events.append))
        _, d, invite = self.dial()
        name = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
        self.alice.dataReceived(respond_to(invite, code, headers=[(name, v) for v in values]))
        warnings = [formatEvent(e) for e in events if e["log_level"] >= LogLevel.warn]
        return d, invite, written(self.alice_t), warnings

    def assertNoCredentialsSent(self, messages: list[Any]) -> None:
        for message in messages:
            self.assertNotIn("Authorization", message.headers)
            self.assertNotIn("Proxy-Authorization", message.headers)

    def test_challenge_for_another_realm_is_not_answered(self) -> None:
        """Issue 14 finding 4: a callee's 401 for realm "evil.example" (qop-less MD5, the
        reproduced attack) gets no credentials in any message, the dial fails with 401
        and one warning names the realm and how to allow it (RFC 3261 §22.2, §26.3.2.3)."""
        for code, challenge in (
            (401, 'Digest realm="evil.example", nonce="n"'),
            (407, 'Digest realm="evil.example", nonce="n", algorithm=SHA-256, qop="auth"'),
        ):
            d, invite, sent, warnings = self.dial_challenged(code, challenge)
            self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, code)
            # Only the transaction's ACK for the non-2xx (§17.1.1.3), without credentials.
            self.assertEqual([(m.method, m.branch) for m in sent], [("ACK", invite.branch)])
            self.assertNoCredentialsSent(sent)
            self.assertEqual(len(warnings), 1, warnings)
            self.assertIn("realm 'evil.example'", warnings[0])
            self.assertIn("--auth-realm 'evil.example'", warnings[0])
            self.assertNotIn("secret", warnings[0])
            self.assertEqual(self.alice.dialog_count, 0)

    def test_registrar_realm_is_answered(self) -> None:
        """The realm bound by the registrar's challenge is answered on calls, another is not."""
        credentials = Credentials("alice", "secret")
        registrar = Response(401, headers=[
            ("WWW-Authenticate", 'Digest realm="registrar.example", nonce="r", qop="auth"')
        ])  # fmt: skip
        credentials.choose(registrar, registrar=True)
        challenge = 'Digest realm="registrar.example", nonce="n1", qop="auth"'
        d, _, sent, warnings = self.dial_challenged(401, challenge, credentials=credentials)
        retry = sent[-1]
        self.assertEqual((retry.method, warnings), ("INVITE", []))
        self.assertIn('realm="registrar.example"', retry.headers["Authorization"])
        self.alice.dataReceived(respond_to(retry, 200, body=ANSWER))
        self.successResultOf(d)
        written(self.alice_t)
        d, _, sent, _ = self.dial_challenged(401, 'Digest realm="x", nonce="n", qop="auth"')
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 401)
        self.assertNoCredentialsSent(sent)

    def test_strongest_algorithm_answered(self) -> None:
        """RFC 8760 §2.4: MD5 listed first does not downgrade the answer from SHA-256."""
        _d, _, sent, _ = self.dial_challenged(
            407,
            'Digest realm="proxy", nonce="m", algorithm=MD5, qop="auth"',
            'Digest realm="proxy", nonce="s", algorithm=SHA-256, qop="auth"',
        )
        value = sent[-1].headers["Proxy-Authorization"]
        self.assertIn("algorithm=SHA-256", value)
        self.assertIn('nonce="s"', value)

    def test_legacy_md5_needs_the_option(self) -> None:
        """qop-less MD5 (RFC 2069) for an allowed realm: refused by default, one warning
        naming --allow-legacy-digest; answered when the user allows it."""
        challenge = 'Digest realm="proxy", nonce="n1"'
        d, _, sent, warnings = self.dial_challenged(407, challenge)
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 407)
        self.assertNoCredentialsSent(sent)
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("--allow-legacy-digest", warnings[0])
        allowed = Credentials("alice", "secret", realms=["proxy"], allow_legacy_digest=True)
        d, _, sent, _ = self.dial_challenged(407, challenge, credentials=allowed)
        self.assertIn('realm="proxy"', sent[-1].headers["Proxy-Authorization"])

    def test_non_ascii_challenge_fails_the_dial(self) -> None:
        """Issue 14 finding 8: a non-UTF-8 byte in the challenge used to raise
        UnicodeEncodeError and leave the dial Deferred unfired; now 401, one warning."""
        # "\udcff" goes on the wire as the byte 0xff (surrogateescape).
        challenge = 'Digest realm="example.com\udcff", nonce="n", qop="auth"'
        credentials = Credentials("alice", "secret", realms=["example.com\udcff"])
        d, _, sent, warnings = self.dial_challenged(401, challenge, credentials=credentials)
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 401)
        self.assertNoCredentialsSent(sent)
        self.assertEqual(len(warnings), 1, warnings)
        self.assertIn("non-ASCII", warnings[0])
        self.assertEqual(self.alice.dialog_count, 0)

    def test_srtp_required_does_not_fall_back(self) -> None:
        self.alice.media_config = types.SimpleNamespace(srtp="required", public_host=None)
        _, d, invite = self.dial()
        self.alice.dataReceived(respond_to(invite, 488))
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 488)

    def test_sips_target_never_falls_back_to_rtp(self) -> None:
        """Issue 14 finding 11: a sips: call is SRTP only, whatever the (default) policy:
        a 488 to its SRTP offer ends the call, no RTP/AVP retry."""
        _, d, invite = self.dial("sips:bob@example.com")
        self.assertIn(b"RTP/SAVP", invite.body)
        self.alice.dataReceived(respond_to(invite, 488))
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 488)
        self.assertEqual([m for m in written(self.alice_t) if m.method == "INVITE"], [])

    def test_sips_aor_never_falls_back_to_rtp(self) -> None:
        """Issue 14 finding 11: the same for any call of a sips: AOR (the embedding API's
        default policy used to retry RTP/AVP without a=crypto after a 488)."""
        alice = make_protocol("sips:alice@example.com", self.clock, self.media)
        transport = connect(alice, 5091)
        d = Dialog(sip=alice).dial("sip:bob@example.com", session_class=FakeSession)
        [invite] = written(transport)
        alice.dataReceived(respond_to(invite, 488))
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 488)
        self.assertEqual([m for m in written(transport) if m.method == "INVITE"], [])

    def test_explicit_insecure_policy_with_sips_target_is_an_error(self) -> None:
        """An explicit srtp="optional"/"off" for a sips: target is refused, not ignored."""
        from voiptwisted.media.call import MediaConfig

        for policy in ("optional", "off"):
            self.alice.media_config = MediaConfig(srtp=policy)
            with self.assertRaises(ValueError) as raised:
                Dialog(sip=self.alice).dial("sips:bob@example.com", session_class=FakeSession)
            self.assertIn("sips: requires SRTP", str(raised.exception))
        self.assertEqual(written(self.alice_t), [])
        self.assertEqual(self.alice.dialog_count, 0)

    def test_inbound_sips_request_uri_answers_srtp_only(self) -> None:
        """A caller that used a sips: Request-URI gets SRTP or 488, never plain RTP."""
        self.bob.dataReceived(
            invite_bytes().replace(b"INVITE sip:bob@127.0.0.1", b"INVITE sips:bob@127.0.0.1", 1)
        )
        self.assertEqual([m.status_code for m in written(self.bob_t)], [100, 180, 488])

    def test_cancel_waits_for_provisional(self) -> None:
        """RFC 3261 §9.1: no CANCEL before a provisional; then CANCEL with the INVITE's Via."""
        _dialog, d, invite = self.dial()
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(written(self.alice_t), [])
        self.alice.dataReceived(respond_to(invite, 100, to_tag=None))
        [cancel] = written(self.alice_t)
        self.assertEqual(cancel.method, "CANCEL")
        self.assertEqual(cancel.branch, invite.branch)
        self.assertEqual(cancel.uri, invite.uri)
        self.assertEqual(cancel.cseq, (1, "CANCEL"))
        self.assertEqual(cancel.headers["To"], invite.headers["To"])
        self.assertEqual(cancel.headers["From"], invite.headers["From"])
        self.alice.dataReceived(respond_to(cancel, 200))
        self.alice.dataReceived(respond_to(invite, 487))
        [ack] = written(self.alice_t)
        self.assertEqual((ack.method, ack.branch), ("ACK", invite.branch))
        self.assertEqual(self.alice.dialog_count, 0)
        self.assertEqual(self.alice.transaction_count, 0)
        self.assertEqual(self.alice.pending_timer_count, 0)

    def test_cancel_unanswered_gives_up(self) -> None:
        """RFC 3261 §9.1: no final response 64*T1 after CANCEL -> the INVITE is abandoned."""
        _, d, invite = self.dial()
        self.alice.dataReceived(respond_to(invite, 180))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        written(self.alice_t)
        self.clock.advance(64 * T1)
        self.assertEqual((self.alice.dialog_count, self.alice.pending_timer_count), (0, 0))

    def test_200_crossing_cancel_is_ended_with_bye(self) -> None:
        """RFC 3261 §9.1: a 2xx arriving after our CANCEL -> ACK, then BYE."""
        _, d, invite = self.dial()
        self.alice.dataReceived(respond_to(invite, 180))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        written(self.alice_t)
        self.alice.dataReceived(respond_to(invite, 200, body=ANSWER))
        self.assertEqual([m.method for m in written(self.alice_t)], ["ACK", "BYE"])


class CallFailedTests(SynchronousTestCase):
    def test_str_and_attributes(self) -> None:
        exc = CallFailed(486)
        self.assertEqual(
            (exc.status_code, exc.phrase, str(exc)), (486, "Busy Here", "486 Busy Here")
        )
        self.assertEqual(str(CallFailed(404, "Nobody")), "404 Nobody")

    def test_dial_needs_protocol(self) -> None:
        self.assertRaises(ValueError, Dialog().dial, "sip:x@example.com", session_class=object)


class StunMediaTests(SynchronousTestCase):
    """With ``stun_server`` configured the CallMedia ``*_deferred`` variants are used."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        base = make_media_class()
        self.pending: list[Deferred[Any]] = []
        pending = self.pending

        class StunMedia(base):  # type: ignore[misc,valid-type]
            @classmethod
            def answer_offer_deferred(cls, config: Any, offer: bytes, host: str) -> Any:
                d: Deferred[Any] = Deferred()
                d.addCallback(lambda _: cls.answer_offer(config, offer, host))
                pending.append(d)
                return d

            @classmethod
            def create_offer_deferred(cls, config: Any, host: str, **kwargs: Any) -> Any:
                d: Deferred[Any] = Deferred()
                d.addCallback(lambda _: cls.create_offer(config, host, **kwargs))
                pending.append(d)
                return d

        self.media = StunMedia
        config = types.SimpleNamespace(srtp="optional", public_host=None, stun_server=("x", 1))
        self.callee = callee_class("answer")
        self.proto = make_protocol(
            "sip:bob@example.com",
            self.clock,
            StunMedia,
            dialog_class=self.callee,
            media_config=config,
        )
        self.transport = connect(self.proto)

    def test_answer_waits_for_stun(self) -> None:
        self.proto.dataReceived(invite_bytes())
        self.assertEqual([m.status_code for m in written(self.transport)], [100, 180])
        self.pending[0].callback(None)
        [ok] = written(self.transport)
        self.assertEqual((ok.status_code, ok.body), (200, ANSWER))

    def test_cancel_during_stun(self) -> None:
        """RFC 3261 §9.2: CANCEL while media is being set up -> 487; the media is released."""
        self.proto.dataReceived(invite_bytes())
        written(self.transport)
        self.proto.dataReceived(invite_bytes(method="CANCEL", body=b""))
        self.assertEqual([m.status_code for m in written(self.transport)], [200, 487])
        self.pending[0].callback(None)
        self.assertEqual(written(self.transport), [])
        self.assertTrue(self.media.created[0].stopped)
        self.assertEqual(self.proto.dialog_count, 0)

    def test_dial_waits_for_stun_and_cancel(self) -> None:
        dialog = Dialog(sip=self.proto)
        d = dialog.dial("sip:carol@example.com", session_class=FakeSession)
        self.assertEqual(written(self.transport), [])
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.pending[0].callback(None)
        self.assertEqual(written(self.transport), [])
        self.assertTrue(self.media.created[0].stopped)
        self.assertEqual((self.proto.dialog_count, self.proto.transaction_count), (0, 0))

    def test_dial_after_stun(self) -> None:
        dialog = Dialog(sip=self.proto)
        dialog.dial("sip:carol@example.com", session_class=FakeSession)
        self.pending[0].callback(None)
        [invite] = written(self.transport)
        self.assertEqual((invite.method, invite.body), ("INVITE", SAVP_OFFER))
        self.assertEqual(invite.headers["From"], f"<sip:bob@example.com>;tag={dialog.local_tag}")


class CallBoundaryTests(CalleeOnTransport):
    """Issue 14 finding 9 and the rest of 12: an exception in a timer or callback ends
    that call cleanly (one log line); unusable targets are refused at set-up; no free
    RTP port is a 503 with one warning per interval, not a traceback per INVITE."""

    BAD_CONTACT = 'Contact: <sip:a"b@127.0.0.1:5099>\r\n'

    def setUp(self) -> None:
        super().setUp()
        self.events: list[dict[str, Any]] = []
        self.patch(dialog_module, "log", Logger(observer=self.events.append))

    def bad_contact_invite(self) -> bytes:
        good = "Contact: <sip:alice@127.0.0.1:5099;transport=tls>\r\n"
        return invite_bytes().replace(good.encode(), self.BAD_CONTACT.encode())

    def test_unusable_contact_in_invite_gets_400(self) -> None:
        """A Contact URI with '"' passes NameAddr but no request can be sent to it: 400."""
        self.bob.dataReceived(self.bad_contact_invite())
        codes = [m.status_code for m in written(self.bob_t)]
        self.assertEqual(codes[-1], 400)
        self.assertNotIn(200, codes)
        self.assertEqual(self.bob.dialog_count, 0)

    def test_exception_in_ack_timeout_ends_the_call_locally(self) -> None:
        """The ACK-timeout BYE raised in a timer (3 tracebacks, dialog stuck for the life
        of the flow): now one error line and the call is gone."""
        self.bob.dataReceived(invite_bytes())
        written(self.bob_t)
        [callee] = self.callee.instances
        callee.remote_contact = 'sip:a"b@127.0.0.1'  # as an unchecked target would be
        self.clock.advance(64 * T1)
        self.assertEqual((self.bob.dialog_count, self.bob.pending_timer_count), (0, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        errors = [e for e in self.events if e["log_level"] >= LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("_ack_timed_out", formatEvent(errors[0]))
        self.assertIsNone(errors[0].get("log_failure"))
        self.assertTrue(self.media.created[0].stopped)

    def test_unusable_contact_in_2xx_fails_the_dial_with_bye(self) -> None:
        alice = make_protocol("sip:alice@example.com", self.clock, self.media)
        alice_t = connect(alice, 5090)
        d = CallerDialog(sip=alice).dial("sip:bob@example.com", session_class=FakeSession)
        [invite] = written(alice_t)
        ok = respond_to(invite, 200, body=ANSWER).replace(
            b"<sip:bob@127.0.0.1:5088;transport=tls>", b'<sip:b"ob@127.0.0.1:5088>'
        )
        alice.dataReceived(ok)
        sent = written(alice_t)
        self.assertEqual([m.method for m in sent], ["ACK", "BYE"])
        self.assertEqual(sent[0].uri, "sip:bob@example.com")
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 502)
        alice.dataReceived(respond_to(sent[1], 200))
        self.assertEqual((alice.dialog_count, alice.pending_timer_count), (0, 0))

    def test_exception_in_final_response_fails_the_dial(self) -> None:
        """A bug while handling the answer must not leave ``--dial`` waiting forever."""
        alice = make_protocol("sip:alice@example.com", self.clock, self.media)
        alice_t = connect(alice, 5090)
        dialog = CallerDialog(sip=alice)
        d = dialog.dial("sip:bob@example.com", session_class=FakeSession)
        [invite] = written(alice_t)

        def broken(response: Any) -> None:
            raise KeyError("bug")

        self.patch(dialog, "_retry_with_credentials", broken)
        alice.dataReceived(respond_to(invite, 401))
        self.failureResultOf(d, CancelledError)
        self.assertEqual((alice.dialog_count, alice.pending_timer_count), (0, 0))

    def test_no_free_rtp_port_is_503_with_one_warning_per_interval(self) -> None:
        """3,614 tracebacks in one run once ports ran out: now 503 + Retry-After and one
        warning line per 10 s with a count."""
        from twisted.internet.error import CannotListenError

        from voiptwisted.sip import limits

        def no_port(*args: Any, **kwargs: Any) -> Any:
            raise CannotListenError("127.0.0.1", 10000, "no free RTP port after 64 tries")

        self.media.answer_offer = no_port
        warnings: list[dict[str, Any]] = []
        self.patch(limits, "log", Logger(observer=warnings.append))
        for i in range(100):
            self.bob.dataReceived(invite_bytes(call_id=f"c{i}", branch=f"z9hG4bK{i}"))
            final = written(self.bob_t)[-1]
            self.assertEqual(final.status_code, 503)
            self.assertEqual(final.headers["Retry-After"], "30")
        self.assertEqual(len(warnings), 1)
        self.assertEqual([e for e in self.events if e.get("log_failure")], [])
        self.assertEqual(self.bob.dialog_count, 0)


class ReferenceAttributeTests(CallPair):
    """The reference's ``Dialog`` names: ``headers``, ``from_header``, ``to_header``,
    ``created`` and ``BYE_ACK_TIMEOUT``, with its meaning."""

    def test_headers_are_what_our_in_dialog_requests_carry(self) -> None:
        """RFC 3261 §12.2.1.1: From is our party with our tag, To the remote party with
        its tag, and both sides see the same Call-ID."""
        self.clock.advance(1000)
        dialog, _d = self.dial()
        [callee] = self.callee.instances
        self.assertEqual(dialog.from_header, str(dialog.local_party))
        self.assertEqual(dialog.to_header, str(dialog.remote_party))
        self.assertIn(f";tag={dialog.local_tag}", dialog.from_header)
        self.assertIn(f";tag={dialog.remote_tag}", dialog.to_header)
        self.assertEqual(
            dialog.headers,
            {"From": dialog.from_header, "To": dialog.to_header, "Call-ID": dialog.call_id},
        )
        # The callee's From is the caller's To and the other way round.
        self.assertEqual(callee.from_header, dialog.to_header)
        self.assertEqual(callee.to_header, dialog.from_header)
        bye = self.alice.transactions  # the BYE goes out with exactly these values
        dialog.bye()
        [request] = [tx.request for tx in bye.client_transactions()]
        self.assertEqual(
            {name: request.headers[name] for name in ("From", "To", "Call-ID")}, dialog.headers
        )

    def test_headers_before_the_dialog_has_parties(self) -> None:
        dialog = Dialog(sip=self.alice, call_id="c1@x")
        self.assertIsNone(dialog.from_header)
        self.assertIsNone(dialog.to_header)
        self.assertEqual(dialog.headers, {"Call-ID": "c1@x"})

    def test_created_is_the_reactor_time_of_construction(self) -> None:
        import datetime

        self.clock.advance(1234.5)
        dialog = Dialog(sip=self.alice)
        self.clock.advance(60)
        self.assertEqual(
            dialog.created,
            datetime.datetime.fromtimestamp(1234.5, datetime.UTC),
        )
        self.assertIsNotNone(Dialog().created.tzinfo)

    def test_bye_ack_timeout_is_64_t1(self) -> None:
        """RFC 3261 §17.1.2.2: the BYE is given up after Timer F, 64*T1."""
        import datetime

        self.assertEqual(Dialog.BYE_ACK_TIMEOUT, datetime.timedelta(seconds=64 * T1))

    def test_bye_ends_the_dialog_after_bye_ack_timeout(self) -> None:
        """A subclass's BYE_ACK_TIMEOUT bounds how long ``bye()`` waits for the answer."""
        import datetime

        class Impatient(CallerDialog):
            BYE_ACK_TIMEOUT = datetime.timedelta(seconds=2)

        dialog = Impatient(sip=self.alice)
        d = dialog.dial("sip:bob@example.com", session_class=FakeSession)
        self.pump.flush()
        self.successResultOf(d)
        bye = dialog.bye()  # not pumped: bob never sees it
        self.clock.advance(1.9)
        self.assertNoResult(bye)
        self.clock.advance(0.2)
        self.assertIsNone(self.successResultOf(bye))
        self.assertEqual(self.alice.dialog_count, 0)
