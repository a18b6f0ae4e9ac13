"""Tests for voiptwisted.sip.protocol: framing, dispatch, UA-core answers, headers, hooks."""

from __future__ import annotations

import types
from typing import Any

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_dialog import (
    CONFIG,
    SAVP_OFFER,
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
from voiptwisted.sip.dialog import Dialog
from voiptwisted.sip.framing import PING, PONG
from voiptwisted.sip.message import Message, Request, Response
from voiptwisted.sip.protocol import (
    USER_AGENT,
    SessionInitiationProtocol,
    SIPClientFactory,
    minimal_response,
    redact,
)
from voiptwisted.sip.transaction import T1, TransactionTimeout
from voiptwisted.sip.uri import NetworkAddress

#: RFC 3261 §20.5: the methods we implement, INFO (RFC 6086) and UPDATE (RFC 3311) too.
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, PRACK, INFO, REFER, UPDATE"


def options_bytes(
    branch: str = "z9hG4bKopt", extra: str = "", to_tag: str = "", method: str = "OPTIONS"
) -> bytes:
    return invite_bytes(method=method, branch=branch, body=b"", extra=extra, to_tag=to_tag)


class Recorder:
    """A registration/keepalive hook that records what the protocol tells it."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def connection_made(self, protocol: Any) -> None:
        self.events.append(("made", protocol))

    def connection_lost(self, protocol: Any, reason: Any = None) -> None:
        self.events.append(("lost", protocol, reason))

    def pong_received(self) -> None:
        self.events.append(("pong",))


class ProtocolTestCase(SynchronousTestCase):
    aor = "sip:bob@example.com"

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.media = make_media_class()
        self.callee = callee_class("ring")
        self.proto = make_protocol(self.aor, self.clock, self.media, dialog_class=self.callee)
        self.transport = connect(self.proto)

    def assertCounts(self, transactions: int, timers: int, dialogs: int) -> None:
        proto = self.proto
        self.assertEqual(
            (proto.transaction_count, proto.pending_timer_count, proto.dialog_count),
            (transactions, timers, dialogs),
        )

    def feed(self, data: bytes) -> list[Any]:
        self.proto.dataReceived(data)
        return written(self.transport)


class NoDelayTransport(StringTransport):
    """A TCP transport that records ``setTcpNoDelay``."""

    no_delay: bool | None = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


class ConnectionTests(SynchronousTestCase):
    def test_tcp_nodelay_on_sip_flow(self) -> None:
        """SIP messages are small and latency-bound: Nagle is switched off on the flow."""
        proto = make_protocol("sip:bob@example.com", task.Clock(), make_media_class())
        transport = NoDelayTransport()
        proto.makeConnection(transport)
        self.assertIs(transport.no_delay, True)


class DispatchTests(ProtocolTestCase):
    def test_options(self) -> None:
        """RFC 3261 §11.2: OPTIONS -> 200 with Allow, Accept and Supported."""
        [ok] = self.feed(options_bytes())
        self.assertEqual(ok.status_code, 200)
        self.assertEqual(ok.headers["Allow"], ALLOW)
        self.assertEqual(ok.headers["Accept"], "application/sdp")
        self.assertEqual(ok.headers["Supported"], "100rel, norefersub, outbound, replaces, timer")
        self.assertEqual(ok.headers["User-Agent"], USER_AGENT)
        self.assertEqual(ok.branch, "z9hG4bKopt")
        self.assertEqual(self.proto.transaction_count, 0)

    def test_unknown_method_405(self) -> None:
        """RFC 3261 §8.2.1: an unsupported method gets 405 with Allow."""
        for method in ("SUBSCRIBE", "FOO", "REGISTER"):
            [resp] = self.feed(options_bytes(method=method, branch=f"z9hG4bK{method}"))
            self.assertEqual(resp.status_code, 405)
            self.assertEqual(resp.headers["Allow"], ALLOW)

    def test_unknown_dialog_481(self) -> None:
        """RFC 3261 §12.2.2: an in-dialog request matching no dialog gets 481 (never 410)."""
        [resp] = self.feed(options_bytes(method="BYE", to_tag="nosuchtag"))
        self.assertEqual(resp.status_code, 481)

    def test_unknown_dialog_reinvite_481(self) -> None:
        """RFC 3261 §12.2.2: a re-INVITE for an unknown dialog gets 100 then 481."""
        sent = self.feed(invite_bytes(branch="z9hG4bKre", to_tag="nosuchtag"))
        self.assertEqual([m.status_code for m in sent], [100, 481])

    def test_cancel_without_invite_481(self) -> None:
        """RFC 3261 §9.2: a CANCEL matching no INVITE transaction gets 481."""
        [resp] = self.feed(options_bytes(method="CANCEL", branch="z9hG4bKnone"))
        self.assertEqual(resp.status_code, 481)

    def test_bye_outside_dialog_481(self) -> None:
        [resp] = self.feed(options_bytes(method="BYE"))
        self.assertEqual(resp.status_code, 481)

    def test_ack_never_answered(self) -> None:
        """RFC 3261 §17: an ACK matching nothing is absorbed, never answered."""
        self.assertEqual(self.feed(options_bytes(method="ACK", to_tag="x")), [])
        self.assertEqual(self.feed(options_bytes(method="ACK")), [])

    def test_require_unknown_extension_420(self) -> None:
        """RFC 3261 §8.2.2.3: Require with an unsupported option tag -> 420 with Unsupported."""
        [resp] = self.feed(options_bytes(extra="Require: precondition, outbound\r\n"))
        self.assertEqual(resp.status_code, 420)
        self.assertEqual(resp.headers["Unsupported"], "precondition")

    def test_invite_with_foreign_body_415(self) -> None:
        """RFC 3261 §8.2.3: a body type we do not understand -> 415 with Accept."""
        raw = invite_bytes().replace(b"application/sdp", b"text/plain")
        sent = self.feed(raw)
        self.assertEqual([m.status_code for m in sent], [100, 415])
        self.assertEqual(sent[1].headers["Accept"], "application/sdp")
        self.assertEqual(self.proto.dialog_count, 0)

    def test_invite_gets_100_trying_then_dialog(self) -> None:
        """RFC 3261 §17.2.1: 100 Trying at once; the dialog's 180 carries our To tag."""
        sent = self.feed(invite_bytes())
        self.assertEqual([m.status_code for m in sent], [100, 180])
        self.assertIsNone(sent[0].remote_tag)
        [dialog] = self.callee.instances
        self.assertEqual(sent[1].remote_tag, dialog.local_tag)
        self.assertEqual(self.proto.dialog_count, 1)

    def test_retransmitted_invite(self) -> None:
        """RFC 3261 §17.2.1: a retransmitted INVITE gets the last provisional, no new call."""
        self.feed(invite_bytes())
        [again] = self.feed(invite_bytes())
        self.assertEqual(again.status_code, 180)
        self.assertEqual(len(self.callee.instances), 1)

    def test_invite_retransmission_after_answer_dropped(self) -> None:
        self.feed(invite_bytes())
        self.callee.instances[0].answer(session_class=lambda dialog: None)
        written(self.transport)
        self.assertEqual(self.feed(invite_bytes()), [])
        self.assertEqual(len(self.callee.instances), 1)

    def test_merged_request_gets_482(self) -> None:
        """RFC 3261 §8.2.2.2: an INVITE without To tag whose Call-ID, From tag and CSeq match
        a call in progress but arriving with another branch gets 482 Loop Detected."""
        self.feed(invite_bytes())
        [merged] = self.feed(invite_bytes(branch="z9hG4bKotherpath"))
        self.assertEqual((merged.status_code, merged.branch), (482, "z9hG4bKotherpath"))
        self.assertEqual((len(self.callee.instances), self.proto.dialog_count), (1, 1))

    def test_cancel_after_final_has_no_effect(self) -> None:
        """RFC 3261 §9.2: CANCEL after the final response: 200 to the CANCEL, nothing else."""
        self.feed(invite_bytes())
        dialog = self.callee.instances[0]
        dialog.reject(486)
        [busy] = written(self.transport)
        [ok] = self.feed(options_bytes(method="CANCEL", branch="z9hG4bKinv1"))
        self.assertEqual(ok.status_code, 200)
        self.assertEqual(ok.cseq, (1, "CANCEL"))
        self.assertEqual(self.callee.hangups, 0)
        self.feed(invite_bytes(method="ACK", body=b"", to_tag=busy.remote_tag))
        self.assertCounts(0, 0, 0)

    def test_cancel_pending_invite(self) -> None:
        """RFC 3261 §9.2: 200 to the CANCEL (To tag of the dialog), 487 to the INVITE."""
        self.feed(invite_bytes())
        dialog = self.callee.instances[0]
        ok, terminated = self.feed(options_bytes(method="CANCEL", branch="z9hG4bKinv1"))
        self.assertEqual((ok.status_code, ok.cseq[1]), (200, "CANCEL"))
        self.assertEqual((terminated.status_code, terminated.cseq[1]), (487, "INVITE"))
        self.assertEqual(terminated.remote_tag, dialog.local_tag)
        self.assertEqual(self.callee.hangups, 1)
        self.assertEqual(self.proto.dialog_count, 0)
        self.feed(invite_bytes(method="ACK", body=b"", to_tag=terminated.remote_tag))
        self.assertEqual((self.proto.transaction_count, self.proto.pending_timer_count), (0, 0))

    def test_no_ack_for_non_2xx_timer_h(self) -> None:
        """RFC 3261 §17.2.1: without the ACK, Timer H ends the INVITE transaction."""
        self.feed(invite_bytes())
        self.callee.instances[0].reject()
        self.assertEqual(self.proto.transaction_count, 1)
        self.clock.advance(64 * T1)
        self.assertEqual((self.proto.transaction_count, self.proto.pending_timer_count), (0, 0))

    def test_max_calls(self) -> None:
        """Beyond max_calls, new INVITEs get 486."""
        self.proto.max_calls = 1
        self.feed(invite_bytes())
        sent = self.feed(invite_bytes(branch="z9hG4bKinv2", call_id="call-2@example.com"))
        self.assertEqual([m.status_code for m in sent], [100, 486])
        self.assertEqual(len(self.callee.instances), 1)

    def test_dialog_limit_bounds_an_invite_flood(self) -> None:
        """Without max_calls, an INVITE flood stops at dialog_limit with 503 + Retry-After
        (RFC 3261 §21.5.4); the dialog and transaction tables stay bounded."""
        self.proto.dialog_limit = 3
        codes = []
        for n in range(10):
            sent = self.feed(invite_bytes(branch=f"z9hG4bKflood{n}", call_id=f"flood-{n}@x"))
            codes.append(sent[-1].status_code)
        self.assertEqual(codes, [180] * 3 + [503] * 7)
        self.assertEqual(sent[-1].headers["Retry-After"], "30")
        self.assertEqual((self.proto.dialog_count, self.proto.transaction_count), (3, 10))
        self.clock.advance(64 * T1)  # Timer H ends the refused INVITEs' transactions
        self.assertEqual((self.proto.dialog_count, self.proto.transaction_count), (3, 3))

    def test_subclass_class_attributes(self) -> None:
        """The reference's ``class MySession(SessionInitiationProtocol): dialog_class =
        MyDialog`` routes inbound calls to MyDialog; ``dialog_limit`` set the same way bounds
        the calls, and both stay settable on the instance."""
        callee = self.callee
        session_class = type(
            "MySession", (SessionInitiationProtocol,), {"dialog_class": callee, "dialog_limit": 1}
        )
        proto = session_class(aor=self.aor, reactor=self.clock, media_class=self.media,
                              media_config=CONFIG)
        transport = connect(proto)
        self.assertIs(proto.dialog_class, callee)
        proto.dataReceived(invite_bytes())
        proto.dataReceived(invite_bytes(branch="z9hG4bKinv2", call_id="call-2@example.com"))
        self.assertEqual([m.status_code for m in written(transport)], [100, 180, 100, 503])
        self.assertEqual(len(callee.instances), 1)
        proto.dialog_limit = 2
        proto.dataReceived(invite_bytes(branch="z9hG4bKinv3", call_id="call-3@example.com"))
        self.assertEqual([m.status_code for m in written(transport)], [100, 180])
        self.assertIs(SessionInitiationProtocol(aor=self.aor, reactor=self.clock).dialog_class,
                      Dialog)

    def test_invite_expires_487(self) -> None:
        """RFC 3261 §13.3.1: an INVITE unanswered when its Expires runs out gets 487."""
        self.feed(invite_bytes(extra="Expires: 30\r\n"))
        self.clock.advance(29)
        self.assertEqual(written(self.transport), [])
        self.clock.advance(1)
        [resp] = written(self.transport)
        self.assertEqual(resp.status_code, 487)
        self.assertEqual(self.callee.hangups, 1)
        self.feed(invite_bytes(method="ACK", body=b"", to_tag=resp.remote_tag))
        self.assertCounts(0, 0, 0)

    def test_ring_timeout_480(self) -> None:
        """A call never answered nor cancelled ends after ring_timeout with 480."""
        self.feed(invite_bytes())
        self.clock.advance(self.callee.ring_timeout)
        [resp] = written(self.transport)
        self.assertEqual(resp.status_code, 480)
        self.assertEqual(self.callee.hangups, 1)
        self.assertEqual(self.proto.dialog_count, 0)

    def test_answer_cancels_expiry(self) -> None:
        self.feed(invite_bytes(extra="Expires: 30\r\n"))
        self.callee.instances[0].answer(session_class=FakeSession)
        self.feed(invite_bytes(method="ACK", body=b"", to_tag=self.callee.instances[0].local_tag))
        self.assertCounts(0, SESSION_TIMERS, 1)

    def test_malformed_contact_400(self) -> None:
        """RFC 3261 §21.4.1: a header needed for the dialog that does not parse -> 400."""
        raw = invite_bytes().replace(
            b"Contact: <sip:alice@127.0.0.1:5099;transport=tls>", b"Contact: <sip:alice@127.0.0.1"
        )
        sent = self.feed(raw)
        self.assertEqual([m.status_code for m in sent], [100, 400])
        self.assertEqual(self.proto.dialog_count, 0)

    def test_dialog_class_crash_500(self) -> None:
        """An exception while creating the dialog ends that call with 500, not the flow."""

        class Broken(self.callee):  # type: ignore[name-defined,misc]
            @classmethod
            def from_request(cls, request: Any, **kwargs: Any) -> Any:
                raise RuntimeError("broken dialog class")

        self.proto.dialog_class = Broken
        sent = self.feed(invite_bytes())
        self.assertEqual([m.status_code for m in sent], [100, 500])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.feed(invite_bytes(method="ACK", body=b"", to_tag=sent[1].remote_tag or ""))
        self.assertCounts(0, 0, 0)
        [ok] = self.feed(options_bytes())
        self.assertEqual(ok.status_code, 200)

    def test_negotiation_failure_488(self) -> None:
        """RFC 3264 via CallMedia.answer_offer: NegotiationFailed -> 488 to the INVITE."""
        self.media.refuse_secure = True
        self.feed(invite_bytes(body=SAVP_OFFER))
        self.callee.instances[0].answer(session_class=object)
        [resp] = written(self.transport)
        self.assertEqual(resp.status_code, 488)
        self.assertEqual(self.proto.dialog_count, 0)

    def test_inbound_pending_call_ends_on_connection_loss(self) -> None:
        self.feed(invite_bytes())
        self.proto.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(self.callee.hangups, 1)
        self.assertCounts(0, 0, 0)


class BadInputTests(ProtocolTestCase):
    def test_unparseable_request_400_keeps_connection(self) -> None:
        """RFC 3261 §21.4.1: a malformed request gets 400; the flow stays up."""
        bad = options_bytes().replace(b"Max-Forwards: 70", b"Max-Forwards: many")
        [resp] = self.feed(bad)
        self.assertEqual(resp.status_code, 400)
        self.assertEqual(resp.branch, "z9hG4bKopt")
        self.assertFalse(self.transport.disconnecting)
        [ok] = self.feed(options_bytes(branch="z9hG4bKnext"))
        self.assertEqual(ok.status_code, 200)

    def test_too_many_via_values_400(self) -> None:
        """RFC 3261 §21.4.1: a request with more Via values than we accept gets 400."""
        extra = "".join(f"Via: SIP/2.0/TLS h{i}.example.com;branch=z9hG4bK{i}\r\n"
                        for i in range(64))
        self.proto.dataReceived(options_bytes(extra=extra))
        # Not parsed back: the 400 copies all 65 Via values (RFC 3261 §8.2.6.2).
        sent = self.transport.value()
        self.assertTrue(sent.startswith(b"SIP/2.0 400 "), sent[:80])
        self.assertIn(b"branch=z9hG4bKopt", sent)
        self.assertFalse(self.transport.disconnecting)

    def test_too_many_record_route_values_in_a_response_dropped(self) -> None:
        raw = bytes(Response.from_request(Message.parse(options_bytes()), 200)).replace(
            b"\r\n\r\n",
            b"\r\nRecord-Route: " + b",".join([b"<sip:p.example.com;lr>"] * 65) + b"\r\n\r\n",
        )
        self.assertEqual(self.feed(raw), [])
        self.assertFalse(self.transport.disconnecting)

    def test_garbage_dropped(self) -> None:
        """Data without the headers a response needs is logged and dropped."""
        self.assertEqual(self.feed(b"HELLO\r\n\r\n"), [])
        self.assertEqual(self.feed(b"SIP/2.0 200 OK\r\nVia: x\r\n\r\n"), [])
        self.assertFalse(self.transport.disconnecting)
        [ok] = self.feed(options_bytes())
        self.assertEqual(ok.status_code, 200)

    def test_bad_response_dropped(self) -> None:
        raw = b"SIP/2.0 200 OK\r\nCSeq: banana\r\nContent-Length: 0\r\n\r\n"
        self.assertEqual(self.feed(raw), [])
        self.assertFalse(self.transport.disconnecting)

    def test_too_large_513_and_close(self) -> None:
        """RFC 3261 §21.5.14 / §18.3: a message over the limit -> 513, then the flow closes."""
        big = options_bytes().replace(b"Content-Length: 0", b"Content-Length: 99999999")
        [resp] = self.feed(big)
        self.assertEqual(resp.status_code, 513)
        self.assertTrue(self.transport.disconnecting)

    def test_bad_content_length_400_and_close(self) -> None:
        """RFC 3261 §18.3: an unusable Content-Length desynchronises the stream: 400, close."""
        bad = options_bytes().replace(b"Content-Length: 0", b"Content-Length: -5")
        [resp] = self.feed(bad)
        self.assertEqual(resp.status_code, 400)
        self.assertTrue(self.transport.disconnecting)

    def test_framing_error_without_headers_just_closes(self) -> None:
        self.assertEqual(self.feed(b"\n\nxx"), [])
        self.assertTrue(self.transport.disconnecting)

    def test_minimal_response(self) -> None:
        self.assertIsNone(minimal_response(b"SIP/2.0 200 OK\r\n\r\n", 400))
        resp = minimal_response(options_bytes(), 400)
        assert resp is not None
        self.assertEqual((resp.status_code, resp.cseq), (400, (1, "OPTIONS")))


class KeepaliveTests(ProtocolTestCase):
    def test_ping_answered_with_pong(self) -> None:
        """RFC 5626 §4.4.1: a CRLFCRLF ping is answered with a CRLF pong."""
        self.proto.dataReceived(PING)
        self.assertEqual(self.transport.value(), PONG)

    def test_pong_reaches_keepalive(self) -> None:
        hook = Recorder()
        self.proto.keepalive = hook
        self.proto.dataReceived(PONG)
        self.assertEqual(hook.events, [("pong",)])
        self.assertEqual(self.transport.value(), b"")

    def test_hooks_told_of_connection(self) -> None:
        registration, keepalive = Recorder(), Recorder()
        proto = make_protocol(self.aor, self.clock, self.media)
        proto.registration = registration
        proto.keepalive = keepalive
        connect(proto)
        reason = Failure(ConnectionLost())
        proto.connectionLost(reason)
        for hook in (registration, keepalive):
            self.assertEqual(hook.events, [("made", proto), ("lost", proto, reason)])


class ClientSideTests(ProtocolTestCase):
    def request(self) -> Request:
        return Request(
            "OPTIONS",
            "sip:example.com",
            [
                ("From", "<sip:bob@example.com>;tag=abc"),
                ("To", "<sip:example.com>"),
                ("Call-ID", "opt-1"),
                ("CSeq", "1 OPTIONS"),
            ],
        )

    def test_send_request_headers(self) -> None:
        """RFC 3261 §8.1.1.7 + RFC 3581: Via with z9hG4bK branch and rport; Max-Forwards 70."""
        d = self.proto.send_request(self.request())
        [sent] = written(self.transport)
        via = sent.top_via
        self.assertEqual(via.protocol, "SIP/2.0/TCP")
        self.assertEqual((str(via.host), via.port), ("127.0.0.1", 5070))
        self.assertTrue(via.branch.startswith("z9hG4bK"))
        self.assertGreater(len(via.branch), 7 + 16)
        self.assertIs(via.rport, True)
        self.assertEqual(sent.headers["Max-Forwards"], "70")
        self.assertEqual(sent.headers["User-Agent"], USER_AGENT)
        self.assertEqual(self.proto.transaction_count, 1)
        self.proto.dataReceived(respond_to(sent, 200, to_tag="t"))
        self.assertEqual(self.successResultOf(d).status_code, 200)
        self.assertEqual((self.proto.transaction_count, self.proto.pending_timer_count), (0, 0))

    def test_branches_unique(self) -> None:
        branches = set()
        for _ in range(50):
            self.proto.send_request(self.request())
            branches.add(written(self.transport)[0].branch)
        self.assertEqual(len(branches), 50)

    def test_timer_f(self) -> None:
        """RFC 3261 §17.1.2.2: Timer F -> TransactionTimeout errback."""
        d = self.proto.send_request(self.request())
        self.clock.advance(64 * T1)
        self.failureResultOf(d, TransactionTimeout)
        self.assertEqual((self.proto.transaction_count, self.proto.pending_timer_count), (0, 0))

    def test_connection_lost_fails_pending(self) -> None:
        d = self.proto.send_request(self.request())
        self.proto.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(d, ConnectionLost)
        self.assertEqual((self.proto.transaction_count, self.proto.pending_timer_count), (0, 0))
        # not connected any more: fails at once
        self.failureResultOf(self.proto.send_request(self.request()), ConnectionDone)

    def test_unmatched_response_dropped(self) -> None:
        request = self.request()
        request.headers["Via"] = "SIP/2.0/TCP 127.0.0.1:5070;branch=z9hG4bKunknown"
        self.assertEqual(self.feed(respond_to(request, 200)), [])

    def test_public_address_learned(self) -> None:
        """RFC 3581 §4: received/rport in our Via reveal the public address, used in Contact."""
        self.proto.send_request(self.request())
        [sent] = written(self.transport)
        response = respond_to(sent, 200).replace(
            b";rport", b";rport=40123;received=198.51.100.7", 1
        )
        self.proto.dataReceived(response)
        self.assertEqual(self.proto.public_address, NetworkAddress.parse("198.51.100.7:40123"))
        self.assertEqual(self.proto.contact, "<sip:bob@198.51.100.7:40123;transport=tcp;ob>")
        self.assertEqual(self.proto.media_host, "198.51.100.7")


class ContactTests(SynchronousTestCase):
    def test_contact_forms(self) -> None:
        """The reference's Contact: sips -> <sips:...;ob>, sip over TCP -> transport=tcp."""
        clock = task.Clock()
        sip = make_protocol("sip:alice@example.com", clock, None)
        connect(sip)
        self.assertEqual(sip.contact, "<sip:alice@127.0.0.1:5070;transport=tcp;ob>")
        sip.is_secure = True
        self.assertEqual(sip.contact, "<sip:alice@127.0.0.1:5070;transport=tls;ob>")
        sips = make_protocol("sips:alice@example.com", clock, None)
        connect(sips)
        self.assertEqual(sips.contact, "<sips:alice@127.0.0.1:5070;ob>")

    def test_ipv6_contact(self) -> None:
        sip = make_protocol("sip:alice@example.com", task.Clock(), None)
        sip.makeConnection(StringTransport(hostAddress=IPv4Address("TCP", "::1", 5070)))
        self.assertEqual(sip.contact, "<sip:alice@[::1]:5070;transport=tcp;ob>")
        self.assertIn("SIP/2.0/TCP [::1]:5070;branch=", sip._via())

    def test_factory(self) -> None:
        """SIPClientFactory builds protocols with its keyword arguments and hooks."""
        hook = Recorder()
        factory = SIPClientFactory(
            aor="sip:alice@example.com", reactor=task.Clock(), registration=hook, max_calls=3
        )
        proto = factory.buildProtocol(None)
        self.assertIsInstance(proto, SessionInitiationProtocol)
        self.assertEqual((proto.max_calls, proto.registration, proto.factory), (3, hook, factory))
        connect(proto)
        self.assertEqual(hook.events, [("made", proto)])

    def test_default_media_class(self) -> None:
        from voiptwisted.media.call import CallMedia

        proto = SessionInitiationProtocol(aor="sip:alice@example.com", reactor=task.Clock())
        self.assertIs(proto.media_class, CallMedia)


class TraceTests(SynchronousTestCase):
    def test_redact(self) -> None:
        """Credentials and SDES keys never reach trace logs."""
        data = (
            b'INVITE sip:x SIP/2.0\r\nAuthorization: Digest response="secret1"\r\n'
            b'proxy-authorization: Digest response="secret2"\r\n\r\n'
            b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:S3CRETKEY|2^20|1:4\r\n"
        )
        out = redact(data)
        for secret in (b"secret1", b"secret2", b"S3CRETKEY"):
            self.assertNotIn(secret, out)
        self.assertIn(b"Authorization: <redacted>\r\n", out)
        self.assertIn(b"inline:<redacted>|2^20|1:4", out)

    def test_redact_is_linear(self) -> None:
        """A frame full of ``a=crypto:`` without ``inline:`` costs about what any frame of
        its size does: the old lazy ``a=crypto:[^\\r\\n]*?inline:`` pattern rescanned the
        rest of the line from every occurrence (quadratic: seconds for 72 kB with trace on).
        Compared with a frame of real crypto lines of the same length, with a huge margin."""
        import time

        def cost(data: bytes) -> float:
            runs = []
            for _ in range(3):
                start = time.perf_counter()
                redact(data)
                runs.append(time.perf_counter() - start)
            return min(runs)

        adversarial = b"a=crypto:" * 8000
        line = b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:S3CRETKEY|2^20|1:4\r\n"
        baseline = cost(line * (len(adversarial) // len(line)))
        self.assertLess(cost(adversarial), 20 * baseline)

    def test_trace_logs_redacted_messages(self) -> None:
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        media = make_media_class()
        proto = make_protocol(
            "sip:bob@example.com",
            task.Clock(),
            media,
            dialog_class=callee_class("answer"),
            trace=True,
        )
        connect(proto)
        proto.dataReceived(
            invite_bytes(
                body=SAVP_OFFER.replace(b"RTP/SAVP", b"RTP/AVP"),
                extra='Authorization: Digest response="pw"\r\n',
            )
        )
        texts = [str(e.get("text", "")) for e in events]
        self.assertTrue(any("INVITE sip:bob" in t for t in texts))
        self.assertTrue(any("SIP/2.0 200 OK" in t for t in texts))
        self.assertFalse(any('response="pw"' in t or "inline:KEY" in t for t in texts))


class NotYetRegistered(Recorder):
    """A registration hook whose new flow is not registered (yet): no target refresh."""

    def when_registered(self) -> Deferred[Any]:
        return Deferred()


class ReconnectTests(SynchronousTestCase):
    """Issue 3 item 3: a call whose flow died keeps its media until BYE or timeout.

    The factory's flows are ours (``outbound``, a reconnecting client) and the new flow
    has not re-registered, so no target refresh goes out (see ``test_refresh``).
    """

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.media = make_media_class()
        self.callee = callee_class("answer")
        self.factory = SIPClientFactory(
            aor="sip:bob@example.com",
            reactor=self.clock,
            media_class=self.media,
            media_config=CONFIG,
            dialog_class=self.callee,
            outbound=True,
            registration=NotYetRegistered(),
        )
        self.first = self.factory.buildProtocol(None)
        transport = connect(self.first)
        self.first.dataReceived(invite_bytes())
        ok = written(transport)[-1]
        self.first.dataReceived(invite_bytes(method="ACK", body=b"", to_tag=ok.remote_tag))
        [self.dialog] = self.callee.instances
        self.first.connectionLost(Failure(ConnectionLost()))

    def test_media_kept_then_timeout(self) -> None:
        self.assertFalse(self.media.created[0].stopped)
        self.assertEqual(self.first.dialog_count, 1)
        self.clock.advance(self.dialog.orphan_timeout - 1)
        self.assertFalse(self.media.created[0].stopped)
        self.clock.advance(1)
        self.assertTrue(self.media.created[0].stopped)
        self.assertEqual(self.callee.hangups, 1)
        self.assertEqual((self.first.dialog_count, self.first.pending_timer_count), (0, 0))

    def test_new_flow_adopts_call(self) -> None:
        second = self.factory.buildProtocol(None)
        transport = connect(second, 5071)
        self.assertEqual((self.first.dialog_count, self.first.pending_timer_count), (0, 0))
        self.assertEqual(second.dialog_count, 1)
        self.assertIs(self.dialog.sip, second)
        self.assertFalse(self.media.created[0].stopped)
        done = self.dialog.bye()
        [bye] = written(transport)
        self.assertEqual(bye.method, "BYE")
        self.assertIn("127.0.0.1:5071", bye.headers["Via"])
        second.dataReceived(respond_to(bye, 200, to_tag=None))
        self.successResultOf(done)
        self.assertEqual((second.dialog_count, second.pending_timer_count), (0, 0))

    def test_adopted_call_bounded_by_rtp_timeout_drops_orphan_timer(self) -> None:
        """Issue 17 item 2: adoption cancels the orphan timer only because the media's RTP
        inactivity timeout (``bounded``) now ends the call if the far end is gone."""
        self.media.created[0].bounded = True
        second = self.factory.buildProtocol(None)
        connect(second, 5071)
        self.assertEqual(self.first.pending_timer_count, 0)
        # the session timer moved with the call
        self.assertEqual(second.pending_timer_count, SESSION_TIMERS)

    def test_adopted_call_without_rtp_timeout_keeps_orphan_timer(self) -> None:
        """Issue 17: the orphan timer is never cancelled without a replacement.  With no
        RTP timeout it moves to the new flow and, at the original deadline, the call
        ends with a BYE there (it used to live for ever: 40 sockets 190 s later)."""
        self.clock.advance(10)
        second = self.factory.buildProtocol(None)
        transport = connect(second, 5071)
        self.assertEqual(self.first.pending_timer_count, 0)
        self.assertEqual(second.pending_timer_count, 1 + SESSION_TIMERS)
        self.clock.advance(self.dialog.orphan_timeout - 10 - 1)
        self.assertEqual(written(transport), [])
        self.clock.advance(1)
        [bye] = written(transport)
        self.assertEqual(bye.method, "BYE")
        self.assertTrue(self.media.created[0].stopped)
        self.assertEqual(self.callee.hangups, 1)
        second.dataReceived(respond_to(bye, 200, to_tag=None))
        self.assertEqual((second.dialog_count, second.pending_timer_count), (0, 0))


class RunTests(SynchronousTestCase):
    def test_run_delegates_to_connect(self) -> None:
        """``SessionInitiationProtocol.run`` delegates to ``voiptwisted.sip.connect.run``."""
        import voiptwisted.sip.connect as connect_module

        calls: list[tuple[Any, ...]] = []
        self.patch(connect_module, "run", lambda *a, **kw: calls.append((a, kw)) or "deferred")
        result = SessionInitiationProtocol.run("sip:alice@example.com", password="pw")
        self.assertEqual(result, "deferred")
        self.assertEqual(calls, [(("sip:alice@example.com",), {"password": "pw"})])

    def fake_connect_run(self) -> tuple[list[tuple[Any, ...]], Deferred[Any]]:
        import voiptwisted.sip.connect as connect_module

        calls: list[tuple[Any, ...]] = []
        d: Deferred[Any] = Deferred()
        self.patch(connect_module, "run", lambda *a, **kw: calls.append((a, kw)) or d)
        return calls, d

    def test_the_reference_call_works_as_written(self) -> None:
        """Issue 13: ``run(fn, aor, dialog_class, *, no_verify_tls, stun_server)`` raised
        TypeError; now it registers, calls *fn* once registered, then fires with the
        protocol.  The AOR's password answers the registrar."""
        from voiptwisted.sip.uri import SipURI

        calls, d = self.fake_connect_run()
        ready: list[str] = []
        aor = SipURI.parse("sips:alice:pw@example.com")
        result = SessionInitiationProtocol.run(
            lambda: ready.append("ready"), aor, Dialog,
            no_verify_tls=True, stun_server=("192.0.2.1", 3478),
        )
        [(args, kwargs)] = calls
        self.assertEqual(args, (aor,))
        media_config = kwargs.pop("media_config")
        self.assertEqual(media_config.stun_server, ("192.0.2.1", 3478))
        self.assertEqual(kwargs, {"password": "pw", "dialog_class": Dialog, "verify": False})
        self.assertNoResult(result)
        self.assertEqual(ready, [])
        protocol = make_protocol("sip:alice@example.com", task.Clock(), make_media_class())
        d.callback(protocol)
        self.assertEqual(ready, ["ready"])
        self.assertIs(self.successResultOf(result), protocol)

    def test_defaults_verify_tls_and_ask_no_stun_server(self) -> None:
        calls, _d = self.fake_connect_run()
        SessionInitiationProtocol.run(lambda: None, "sip:alice@example.com", None)
        [((aor,), kwargs)] = calls
        self.assertEqual((aor.aor, aor.port_given, kwargs), ("sip:alice@example.com", False, {}))

    def test_a_subclass_builds_the_flows(self) -> None:
        """``MySession.run(...)`` registers flows of MySession, so its on_registered runs."""

        class MySession(SessionInitiationProtocol):
            pass

        calls, _d = self.fake_connect_run()
        MySession.run(lambda: None, "sip:alice@example.com", Dialog)
        self.assertIs(calls[0][1]["protocol_class"], MySession)

    def test_fn_raising_stops_the_client_and_fails(self) -> None:
        _calls, d = self.fake_connect_run()
        stopped: list[bool] = []

        def broken() -> None:
            raise RuntimeError("application bug")

        result = SessionInitiationProtocol.run(broken, "sip:alice@example.com", Dialog)
        protocol = make_protocol("sip:alice@example.com", task.Clock(), make_media_class())
        protocol.service = types.SimpleNamespace(stopService=lambda: stopped.append(True))
        d.callback(protocol)
        self.failureResultOf(result, RuntimeError)
        self.assertEqual(stopped, [True])

    def test_build_client_builds_the_protocol_class(self) -> None:
        from voiptwisted.sip.connect import build_client
        from voiptwisted.sip.uri import SipURI

        class MySession(SessionInitiationProtocol):
            pass

        def no_dns(aor: Any) -> Deferred[Any]:
            return Deferred()

        client = build_client(
            SipURI.parse("sips:alice@example.com"), reactor=task.Clock(), keepalive=None,
            resolver=no_dns, protocol_class=MySession,
        )
        self.assertIsInstance(client.factory.buildProtocol(None), MySession)
        self.assertRaises(
            ValueError, build_client, SipURI.parse("sip:alice@example.com;transport=udp"),
            reactor=task.Clock(), protocol_class=MySession,
        )


class ReferenceHookTests(ProtocolTestCase):
    """The reference's ``on_registered`` and ``disconnected_event``, the Twisted way."""

    def test_when_disconnected_fires_when_the_flow_ends(self) -> None:
        first, second = self.proto.when_disconnected(), self.proto.when_disconnected()
        self.assertNoResult(first)
        first.addCallback(lambda _: "changed")  # one waiter's callbacks are its own
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.successResultOf(first), "changed")
        self.assertIsNone(self.successResultOf(second))
        self.assertIsNone(self.successResultOf(self.proto.when_disconnected()))

    def test_cancelling_a_waiter_only_stops_waiting(self) -> None:
        waiter = self.proto.when_disconnected()
        waiter.cancel()
        self.failureResultOf(waiter, CancelledError)
        later = self.proto.when_disconnected()
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(self.successResultOf(later))

    def test_a_refused_connection_is_disconnected_too(self) -> None:
        proto = make_protocol(self.aor, self.clock, self.media)
        proto.admitted = False
        waiter = proto.when_disconnected()
        connect(proto)
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertIsNone(self.successResultOf(waiter))

    def test_on_registered_is_a_hook_doing_nothing(self) -> None:
        self.assertIsNone(self.proto.on_registered())
