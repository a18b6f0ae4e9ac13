"""Tests for voiptwisted.sip.core: the UA core driven with parsed messages and a Clock alone.

No transport and no protocol: messages go in through ``UserAgentCore.receive``
with a made-up source, and what the core hands out is collected from its
``send(message, destination)`` callable.  Media is the fake ``CallMedia`` of
:mod:`tests.sip.test_dialog`.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from twisted.internet import task
from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tests.sip.test_dialog import (
    AVP_OFFER,
    CONFIG,
    FakeSession,
    callee_class,
    invite_bytes,
    make_media_class,
    respond_to,
)
from voiptwisted.interfaces import IUserAgent
from voiptwisted.sip.core import UserAgentCore
from voiptwisted.sip.dialog import CallFailed, Dialog
from voiptwisted.sip.message import Message, Request, Response
from voiptwisted.sip.transaction import T1
from voiptwisted.sip.uri import NetworkAddress

#: RFC 3261 §20.5: the methods we implement, INFO (RFC 6086) and UPDATE (RFC 3311) too.
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, NOTIFY, PRACK, INFO, REFER, UPDATE"

#: Where the test's requests "come from": an opaque token for the core.
PEER = ("127.0.0.1", 5061)
LOCAL = NetworkAddress.parse("192.0.2.10:5070")


def parse(data: bytes) -> Any:
    return Message.parse(data)


class CoreTestCase(SynchronousTestCase):
    """One core on a Clock, connected, answering calls with ``callee_action``."""

    callee_action = "ring"

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.media = make_media_class()
        self.callee = callee_class(self.callee_action)
        self.sent: list[tuple[Any, Any]] = []
        self.core = UserAgentCore(
            aor="sip:bob@example.com",
            send=lambda message, destination: self.sent.append((message, destination)),
            reactor=self.clock,
            dialog_class=self.callee,
            media_class=self.media,
            media_config=CONFIG,
        )
        self.core.connection_made(LOCAL, secure=True)

    def take(self) -> list[Any]:
        """The messages handed out since the last call (destinations checked separately)."""
        messages = [message for message, _ in self.sent]
        self.sent.clear()
        return messages

    def receive(self, data: bytes) -> None:
        self.core.receive(parse(data), PEER)

    def assertNothingLeft(self) -> None:
        self.assertEqual(
            (
                self.core.dialog_count,
                self.core.transaction_count,
                self.core.pending_timer_count,
            ),
            (0, 0, 0),
        )
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SeamTests(CoreTestCase):
    def test_core_provides_the_user_agent_seam(self) -> None:
        """The core is the IUserAgent dialogs use; new inbound dialogs get the core as sip."""
        self.assertTrue(verifyObject(IUserAgent, self.core))
        self.receive(invite_bytes())
        [dialog] = self.callee.instances
        self.assertIs(dialog.sip, self.core)

    def test_protocol_stands_in_for_the_core(self) -> None:
        """The stream adapter provides the same seam by delegating, so ``Dialog(sip=protocol)``
        keeps working; dialogs it creates get the protocol as ``sip``."""
        from voiptwisted.sip.protocol import SessionInitiationProtocol

        proto = SessionInitiationProtocol(aor="sip:bob@example.com", reactor=self.clock)
        self.assertTrue(verifyObject(IUserAgent, proto))
        self.assertIs(proto.core.agent, proto)
        self.assertFalse(proto.is_connected)

    def test_import_loads_no_reactor(self) -> None:
        """The core is sans-I/O: importing it installs no reactor (time comes from the clock)."""
        code = "import sys, voiptwisted.sip.core; print('twisted.internet.reactor' in sys.modules)"
        output = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        self.assertEqual(output.strip(), "False")


class AnswersTests(CoreTestCase):
    """The answers the core gives itself (RFC 3261 §8.2, §11, §12.2.2)."""

    def test_options_200_to_source(self) -> None:
        """RFC 3261 §11.2: OPTIONS outside a dialog gets 200 with Allow/Accept/Supported,
        handed out for the request's source."""
        self.receive(invite_bytes(method="OPTIONS", body=b""))
        [(response, destination)] = self.sent
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.headers["Allow"], ALLOW)
        self.assertEqual(response.headers["Accept"], "application/sdp")
        self.assertIn("voiptwisted/", response.headers["User-Agent"])
        self.assertEqual(destination, PEER)
        self.assertNothingLeft()

    def test_unknown_method_405(self) -> None:
        """RFC 3261 §8.2.1: a method we do not handle gets 405 with Allow."""
        self.receive(invite_bytes(method="SUBSCRIBE", body=b""))
        [response] = self.take()
        self.assertEqual(response.status_code, 405)
        self.assertEqual(response.headers["Allow"], self.core.allow_header)

    def test_unsupported_require_420(self) -> None:
        """RFC 3261 §8.2.2.3: a Require we do not support gets 420 listing it in Unsupported."""
        self.receive(invite_bytes(extra="Require: precondition, outbound\r\n"))
        trying, response = self.take()
        self.assertEqual((trying.status_code, response.status_code), (100, 420))
        self.assertEqual(response.headers["Unsupported"], "precondition")
        self.assertEqual(self.callee.instances, [])

    def test_unknown_dialog_481(self) -> None:
        """RFC 3261 §12.2.2: a request with a To tag matching no dialog gets 481."""
        self.receive(invite_bytes(method="BYE", body=b"", to_tag="nosuchtag"))
        [response] = self.take()
        self.assertEqual(response.status_code, 481)
        self.assertNothingLeft()

    def test_unmatched_cancel_481(self) -> None:
        """RFC 3261 §9.2: a CANCEL matching no INVITE server transaction gets 481."""
        self.receive(invite_bytes(method="CANCEL", body=b""))
        [response] = self.take()
        self.assertEqual(response.status_code, 481)

    def test_max_calls_486(self) -> None:
        """Beyond ``max_calls`` a new INVITE gets 100 Trying then 486 Busy Here."""
        self.core.max_calls = 1
        self.receive(invite_bytes())
        self.receive(invite_bytes(call_id="call-2@example.com", branch="z9hG4bKinv2"))
        codes = [m.status_code for m in self.take()]
        self.assertEqual(codes, [100, 180, 100, 486])

    def test_merged_request_482(self) -> None:
        """RFC 3261 §8.2.2.2: the same INVITE (Call-ID, From tag, CSeq) on another branch
        is a merged request: 482, and no second call."""
        self.receive(invite_bytes())
        self.take()
        self.receive(invite_bytes(branch="z9hG4bKother"))
        [response] = self.take()
        self.assertEqual(response.status_code, 482)
        self.assertEqual(len(self.callee.instances), 1)

    def test_malformed_header_needed_late_400(self) -> None:
        """RFC 3261 §21.4.1: a header only parsed while handling (Contact) is malformed: 400,
        and the call it would have made is gone."""
        data = invite_bytes().replace(
            b"Contact: <sip:alice@127.0.0.1:5099;transport=tls>", b"Contact: <<<"
        )
        self.receive(data)
        codes = [m.status_code for m in self.take()]
        self.assertEqual(codes, [100, 400])
        self.assertEqual(self.core.dialog_count, 0)

    def test_unparseable_request_400_to_source(self) -> None:
        """RFC 3261 §8.2.6.2: a request that does not parse gets 400 when Via, From, To,
        Call-ID and CSeq can be picked out; a response that does not parse gets nothing."""
        request = invite_bytes().replace(b"Max-Forwards: 70", b"Max-Forwards: many")
        self.assertTrue(self.core.receive_unparseable(request, 400, PEER))
        [(response, destination)] = self.sent
        self.assertEqual((response.status_code, destination), (400, PEER))
        self.assertFalse(self.core.receive_unparseable(b"SIP/2.0 200 OK\r\n\r\n", 400, PEER))


class InviteTests(CoreTestCase):
    def test_invite_100_then_dialog_class(self) -> None:
        """RFC 3261 §17.2.1 / §13.3: 100 Trying at once, then the dialog class's
        call_received (here: 180 with our To tag)."""
        self.receive(invite_bytes())
        trying, ringing = self.take()
        self.assertEqual(trying.status_code, 100)
        self.assertIsNone(trying.remote_tag)
        [dialog] = self.callee.instances
        self.assertEqual(ringing.status_code, 180)
        self.assertEqual(ringing.remote_tag, dialog.local_tag)
        self.assertEqual(self.core.dialog_count, 1)
        self.assertIn(";transport=tls", ringing.headers["Contact"])
        self.assertIn("192.0.2.10:5070", ringing.headers["Contact"])

    def test_retransmission_absorbed(self) -> None:
        """RFC 3261 §17.2.1: a retransmitted INVITE goes to its server transaction, which
        resends the last provisional; the application sees one call."""
        self.receive(invite_bytes())
        self.take()
        self.receive(invite_bytes())
        [again] = self.take()
        self.assertEqual(again.status_code, 180)
        self.assertEqual(len(self.callee.instances), 1)

    def test_cancel_487(self) -> None:
        """RFC 3261 §9.2: CANCEL gets 200 (with the dialog's To tag), the INVITE 487, and the
        call ends with hangup_received."""
        self.receive(invite_bytes())
        self.take()
        self.receive(invite_bytes(method="CANCEL", body=b""))
        ok, terminated = self.take()
        [dialog] = self.callee.instances
        self.assertEqual((ok.status_code, ok.cseq[1]), (200, "CANCEL"))
        self.assertEqual(ok.remote_tag, dialog.local_tag)
        self.assertEqual((terminated.status_code, terminated.cseq[1]), (487, "INVITE"))
        self.assertEqual(self.callee.hangups, 1)
        self.receive(invite_bytes(method="ACK", body=b"", to_tag=dialog.local_tag))
        self.assertNothingLeft()

    def test_invite_expires_487_on_clock(self) -> None:
        """RFC 3261 §13.3.1: past the INVITE's Expires the UAS answers 487; the timer runs on
        the injected clock only."""
        self.receive(invite_bytes(extra="Expires: 5\r\n"))
        self.take()
        self.clock.advance(4.9)
        self.assertEqual(self.take(), [])
        self.clock.advance(0.1)
        [expired] = self.take()
        self.assertEqual(expired.status_code, 487)

    def test_timer_h_on_clock(self) -> None:
        """RFC 3261 §17.2.1: without the ACK for a non-2xx final response, Timer H (64*T1)
        ends the INVITE server transaction."""
        self.callee.action = "reject"
        self.receive(invite_bytes())
        self.assertEqual([m.status_code for m in self.take()], [100, 486])
        self.assertEqual(self.core.transaction_count, 1)
        self.clock.advance(64 * T1)
        self.assertNothingLeft()


class AnsweredCallTests(CoreTestCase):
    callee_action = "answer"

    def answered(self) -> tuple[Any, Response]:
        self.receive(invite_bytes())
        ok = self.take()[-1]
        self.assertEqual(ok.status_code, 200)
        [dialog] = self.callee.instances
        return dialog, ok

    def test_2xx_retransmitted_on_clock_until_ack(self) -> None:
        """RFC 3261 §13.3.1.4: the 2xx goes out again at T1, 2*T1 ... until the ACK, which is
        routed to the dialog and starts the session."""
        dialog, ok = self.answered()
        self.clock.advance(T1)
        [again] = self.take()
        self.assertEqual(again.status_code, 200)
        self.receive(invite_bytes(method="ACK", body=b"", to_tag=ok.remote_tag))
        self.assertEqual(dialog.session.started, 1)
        self.clock.advance(60)
        self.assertEqual(self.take(), [])

    def test_in_dialog_bye_routed(self) -> None:
        """RFC 3261 §15.1.2: a BYE in the dialog reaches it: 200, media stopped,
        hangup_received, nothing left behind."""
        _dialog, ok = self.answered()
        self.receive(invite_bytes(method="ACK", body=b"", to_tag=ok.remote_tag))
        self.receive(
            invite_bytes(method="BYE", body=b"", to_tag=ok.remote_tag, cseq=2, branch="z9hG4bKbye")
        )
        [response] = self.take()
        self.assertEqual((response.status_code, response.cseq[1]), (200, "BYE"))
        self.assertEqual(self.callee.hangups, 1)
        self.assertTrue(self.media.created[0].stopped)
        self.assertNothingLeft()

    def test_in_dialog_options(self) -> None:
        """RFC 3261 §11.2: OPTIONS inside a dialog is answered by the dialog with our Allow."""
        _dialog, ok = self.answered()
        self.receive(invite_bytes(method="ACK", body=b"", to_tag=ok.remote_tag))
        self.receive(
            invite_bytes(
                method="OPTIONS", body=b"", to_tag=ok.remote_tag, cseq=2, branch="z9hG4bKopt"
            )
        )
        [response] = self.take()
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.headers["Allow"], self.core.allow_header)


class ClientTests(CoreTestCase):
    def test_request_gets_via_and_response_matched(self) -> None:
        """RFC 3261 §8.1.1.7 / §17.1.3: a request gets our Via (sent-by, z9hG4bK branch,
        rport) and Max-Forwards; its response is matched to the transaction by branch."""
        request = Request(
            "OPTIONS",
            "sip:example.com",
            [
                ("From", "<sip:bob@example.com>;tag=t"),
                ("To", "<sip:example.com>"),
                ("Call-ID", "c1"),
                ("CSeq", "1 OPTIONS"),
            ],
        )
        d = self.core.send_request(request)
        [(sent, destination)] = self.sent
        self.assertIsNone(destination)
        via = sent.headers["Via"]
        self.assertTrue(via.startswith("SIP/2.0/TLS 192.0.2.10:5070;branch=z9hG4bK"), via)
        self.assertIn(";rport", via)
        self.assertEqual(sent.headers["Max-Forwards"], "70")
        self.core.receive(parse(respond_to(sent, 200)), PEER)
        self.assertEqual(self.successResultOf(d).status_code, 200)
        self.assertNothingLeft()

    def test_public_address_learned_from_via(self) -> None:
        """RFC 3581 §4: received/rport of a response's top Via become our Contact's host."""
        request = Request(
            "OPTIONS",
            "sip:example.com",
            [
                ("From", "<sip:bob@example.com>;tag=t"),
                ("To", "<sip:example.com>"),
                ("Call-ID", "c1"),
                ("CSeq", "1 OPTIONS"),
            ],
        )
        d = self.core.send_request(request)
        [(sent, _)] = self.sent
        response = parse(respond_to(sent, 200))
        via = response.headers["Via"]
        response.headers["Via"] = via.replace(";rport", ";rport=40000;received=203.0.113.5")
        self.core.receive(parse(bytes(response)), PEER)
        self.successResultOf(d)
        self.assertEqual(str(self.core.public_address), "203.0.113.5:40000")
        self.assertIn("bob@203.0.113.5:40000", self.core.contact)

    def test_not_connected_fails_at_once(self) -> None:
        """Without a transport (before connection_made, after connection_lost) a client
        transaction fails with ConnectionDone and nothing is handed out."""
        self.core.connection_lost(ConnectionDone())
        d = self.core.send_request(
            Request(
                "OPTIONS",
                "sip:example.com",
                [
                    ("From", "<sip:bob@example.com>;tag=t"),
                    ("To", "<sip:example.com>"),
                    ("Call-ID", "c2"),
                    ("CSeq", "1 OPTIONS"),
                ],
            )
        )
        self.failureResultOf(d, ConnectionDone)
        self.assertEqual(self.sent, [])

    def test_dial_through_the_seam(self) -> None:
        """A Dialog placing a call on the core alone: INVITE out, 200 in, ACK out (§13.2.2.4);
        the dial Deferred fires with the dialog."""
        dialog = Dialog(sip=self.core)
        d = dialog.dial("sip:alice@example.com", session_class=FakeSession)
        [invite] = self.take()
        self.assertEqual(invite.method, "INVITE")
        self.assertEqual(invite.body, self.media.created[0].local_sdp)
        self.core.receive(parse(respond_to(invite, 200, body=AVP_OFFER)), PEER)
        [ack] = self.take()
        self.assertEqual((ack.method, ack.cseq[0]), ("ACK", invite.cseq[0]))
        self.assertIs(self.successResultOf(d), dialog)
        self.assertEqual(dialog.session.started, 1)

    def test_dial_refused(self) -> None:
        """A final 486 to our INVITE fails the dial with CallFailed and forgets the call."""
        dialog = Dialog(sip=self.core)
        d = dialog.dial("sip:alice@example.com", session_class=FakeSession)
        [invite] = self.take()
        self.core.receive(parse(respond_to(invite, 486)), PEER)
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 486)
        self.assertEqual(self.core.dialog_count, 0)

    def test_connection_lost_fails_pending_requests(self) -> None:
        """The adapter's transport going away fails pending client transactions with its
        reason and ends calls not yet established."""
        dialog = Dialog(sip=self.core)
        d = dialog.dial("sip:alice@example.com", session_class=FakeSession)
        self.core.connection_lost(ConnectionDone("gone"))
        self.failureResultOf(d, ConnectionDone)
        self.assertNothingLeft()


class InteropMustTests(CoreTestCase):
    """Issue 10 item 7: MUSTs real carriers and PBXs rely on, each with its section."""

    def assertTagged(self, response: Response) -> None:
        self.assertIsNotNone(response.remote_tag, f"{response!r} has no To tag")

    def test_every_core_response_but_100_has_a_to_tag(self) -> None:
        """RFC 3261 §8.2.6.2: the UAS MUST add a To tag to every response but 100: OPTIONS
        200, 405, 420, 481 (BYE or CANCEL matching nothing), 486, 415, 482, 503, 400."""
        cases: list[tuple[bytes, int]] = [
            (invite_bytes(method="OPTIONS", body=b"", branch="z9hG4bKo"), 200),
            (invite_bytes(method="SUBSCRIBE", body=b"", branch="z9hG4bKs"), 405),
            (invite_bytes(extra="Require: nosuchtag\r\n", call_id="c420", branch="z9hG4bKr"), 420),
            (invite_bytes(method="BYE", body=b"", call_id="c481", branch="z9hG4bKb"), 481),
            (invite_bytes(method="CANCEL", body=b"", call_id="c481c", branch="z9hG4bKno"), 481),
        ]
        for data, code in cases:
            self.receive(data)
            final = self.take()[-1]
            self.assertEqual(final.status_code, code)
            self.assertTagged(final)
        body_415 = invite_bytes(call_id="c415", branch="z9hG4bK415").replace(
            b"Content-Type: application/sdp", b"Content-Type: text/plain"
        )
        self.receive(body_415)
        trying, refused = self.take()
        self.assertIsNone(trying.remote_tag)
        self.assertEqual(refused.status_code, 415)
        self.assertTagged(refused)
        self.core.max_calls = 0
        self.receive(invite_bytes(call_id="c486", branch="z9hG4bK486"))
        busy = self.take()[-1]
        self.assertEqual(busy.status_code, 486)
        self.assertTagged(busy)
        self.core.max_calls = None
        self.core.dialog_limit = 0
        self.receive(invite_bytes(call_id="c503", branch="z9hG4bK503"))
        limited = self.take()[-1]
        self.assertEqual(limited.status_code, 503)
        self.assertTagged(limited)
        self.core.dialog_limit = 1000
        self.receive(invite_bytes())
        self.take()
        self.receive(invite_bytes(branch="z9hG4bKmerged"))
        [merged] = self.take()
        self.assertEqual(merged.status_code, 482)
        self.assertTagged(merged)
        broken = invite_bytes(call_id="c400", branch="z9hG4bK400")
        broken = broken.replace(b"Max-Forwards: 70", b"Max-Forwards: x")
        self.assertTrue(self.core.receive_unparseable(broken, 400, PEER))
        [bad] = self.take()
        self.assertTagged(bad)

    def test_cancel_487_keeps_the_dialog_tag(self) -> None:
        """RFC 3261 §8.2.6.2 / §9.2: the 487 a CANCEL causes carries the call's To tag."""
        self.receive(invite_bytes())
        self.take()
        self.receive(invite_bytes(method="CANCEL", body=b""))
        ok, terminated = self.take()
        [dialog] = self.callee.instances
        self.assertEqual(ok.remote_tag, dialog.local_tag)
        self.assertEqual(terminated.remote_tag, dialog.local_tag)

    def test_dialled_uri_not_rewritten(self) -> None:
        """RFC 3261 §19.1.4 / §25.1: the Request-URI and To are the URI the user gave: ``+``
        unescaped and no default port added (RFC 3263 §4.2: SRV only without a port)."""
        from voiptwisted.sip.uri import SipURI

        dialog = Dialog(sip=self.core)
        dialog.dial(SipURI.parse("sip:+4930123456@carrier.example"), session_class=FakeSession)
        [invite] = self.take()
        self.assertEqual(invite.uri, "sip:+4930123456@carrier.example")
        self.assertEqual(invite.headers["To"], "<sip:+4930123456@carrier.example>")
        self.assertIn(b"INVITE sip:+4930123456@carrier.example SIP/2.0\r\n", bytes(invite))

    def test_trying_copies_timestamp(self) -> None:
        """RFC 3261 §8.2.6.1: the 100 Trying carries the request's Timestamp."""
        self.receive(invite_bytes(extra="Timestamp: 54.2 0.5\r\n"))
        trying = self.take()[0]
        self.assertEqual(trying.status_code, 100)
        self.assertEqual(trying.headers["Timestamp"], "54.2 0.5")

    def test_unsupported_content_encoding_415(self) -> None:
        """RFC 3261 §8.2.3: a body in a Content-Encoding we cannot decode gets 415 listing
        what we accept in Accept-Encoding, and never reaches the application."""
        self.receive(invite_bytes(extra="Content-Encoding: gzip\r\n"))
        _trying, refused = self.take()
        self.assertEqual(refused.status_code, 415)
        self.assertEqual(refused.headers["Accept-Encoding"], "identity")
        self.assertEqual(self.callee.instances, [])
        self.receive(invite_bytes(extra="e: identity\r\n", call_id="c2", branch="z9hG4bKid"))
        self.assertEqual([m.status_code for m in self.take()], [100, 180])

    def test_received_added_for_a_host_name_sent_by(self) -> None:
        """RFC 3261 §18.2.1: a top Via sent-by that is a host name (or another address)
        gets ``received`` with the source address on our responses; lower Vias unchanged."""
        data = invite_bytes(method="OPTIONS", body=b"").replace(
            b"Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKinv1;rport\r\n",
            b"Via: SIP/2.0/TLS pbx.example:5061;branch=z9hG4bKinv1\r\n"
            b"Via: SIP/2.0/TLS 198.51.100.7;branch=z9hG4bKup\r\n",
        )
        self.core.receive(parse(data), ("192.0.2.44", 40001))
        [response] = self.take()
        vias = response.headers.getlist("Via")
        self.assertEqual(
            vias,
            [
                "SIP/2.0/TLS pbx.example:5061;branch=z9hG4bKinv1;received=192.0.2.44",
                "SIP/2.0/TLS 198.51.100.7;branch=z9hG4bKup",
            ],
        )

    def test_rport_filled_in(self) -> None:
        """RFC 3581 §4: ``rport`` without a value gets the source port, and ``received``
        goes in even when it equals the sent-by."""
        self.core.receive(parse(invite_bytes(method="OPTIONS", body=b"")), ("127.0.0.1", 40002))
        [response] = self.take()
        via = response.top_via
        self.assertEqual((via.received, via.rport), ("127.0.0.1", 40002))

    def test_same_address_without_rport_unchanged(self) -> None:
        """RFC 3261 §18.2.1: an IP sent-by equal to the source needs no ``received``."""
        data = invite_bytes(method="OPTIONS", body=b"").replace(b";rport\r\n", b"\r\n")
        self.core.receive(parse(data), ("127.0.0.1", 5061))
        [response] = self.take()
        self.assertEqual(
            response.headers["Via"], "SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKinv1"
        )

    def test_response_with_two_vias_dropped(self) -> None:
        """RFC 3261 §8.1.3.3: a response with more than one Via is discarded; the transaction
        goes on and takes the right response."""
        request = Request(
            "OPTIONS",
            "sip:example.com",
            [
                ("From", "<sip:bob@example.com>;tag=t"),
                ("To", "<sip:example.com>"),
                ("Call-ID", "c1"),
                ("CSeq", "1 OPTIONS"),
            ],
        )
        d = self.core.send_request(request)
        [(sent, _)] = self.sent
        stray = parse(respond_to(sent, 500))
        stray.headers.add("Via", "SIP/2.0/TLS 198.51.100.9;branch=z9hG4bKelse")
        self.core.receive(parse(bytes(stray)), PEER)
        self.assertNoResult(d)
        self.core.receive(parse(respond_to(sent, 200)), PEER)
        self.assertEqual(self.successResultOf(d).status_code, 200)

    def test_cancel_crossing_our_200_gets_200(self) -> None:
        """RFC 6026 §7.1: a CANCEL for an INVITE we already answered with 2xx matches it:
        200 (not 481) with the call's tag, and the call carries on."""
        self.callee.action = "answer"
        self.receive(invite_bytes())
        ok = self.take()[-1]
        self.assertEqual(ok.status_code, 200)
        self.receive(invite_bytes(method="CANCEL", body=b""))
        [response] = self.take()
        self.assertEqual((response.status_code, response.cseq[1]), (200, "CANCEL"))
        self.assertEqual(response.remote_tag, ok.remote_tag)
        self.assertEqual(self.core.dialog_count, 1)
        self.assertEqual(self.callee.hangups, 0)


class InDialogChallengeTests(CoreTestCase):
    """Issue 10 item 4: 401/407 to an in-dialog request (RFC 3261 §8.1.3.5, §22.2)."""

    CHALLENGE = 'Digest realm="carrier.example", nonce="n1", qop="auth", algorithm=MD5'

    def setUp(self) -> None:
        super().setUp()
        from voiptwisted.sip.digest import Credentials

        self.core.credentials = Credentials("bob", "secret", realms=["carrier.example"])

    def established(self) -> Dialog:
        dialog = Dialog(sip=self.core)
        dialog.dial("sip:alice@example.com", session_class=FakeSession)
        [invite] = self.take()
        self.core.receive(parse(respond_to(invite, 200, body=AVP_OFFER)), PEER)
        self.take()  # the ACK
        return dialog

    def challenge(self, request: Request, code: int = 407, realm: str = "carrier.example"
                  ) -> None:
        header = "Proxy-Authenticate" if code == 407 else "WWW-Authenticate"
        value = self.CHALLENGE.replace("carrier.example", realm)
        self.core.receive(parse(respond_to(request, code, headers=[(header, value)])), PEER)

    def test_challenged_bye_retried_once_with_credentials(self) -> None:
        """RFC 3261 §22.2 / §8.1.3.5: a 407 to our BYE is answered once: the BYE again in the
        same dialog (Call-ID, tags, Request-URI) with a higher CSeq and Proxy-Authorization
        for the challenging realm; its 200 ends the call."""
        dialog = self.established()
        ended = dialog.bye()
        [bye] = self.take()
        self.challenge(bye)
        [again] = self.take()
        self.assertEqual(again.method, "BYE")
        self.assertEqual(again.cseq[0], bye.cseq[0] + 1)
        self.assertEqual(
            (again.call_id, again.local_tag, again.remote_tag, again.uri),
            (bye.call_id, bye.local_tag, bye.remote_tag, bye.uri),
        )
        self.assertNotEqual(again.branch, bye.branch)
        self.assertIn('realm="carrier.example"', again.headers["Proxy-Authorization"])
        self.assertNoResult(ended)
        self.core.receive(parse(respond_to(again, 200)), PEER)
        self.successResultOf(ended)
        self.assertNothingLeft()

    def test_401_uses_authorization(self) -> None:
        """RFC 3261 §22.2: a 401 is answered with Authorization (a 407 with Proxy-...)."""
        dialog = self.established()
        dialog.bye()
        [bye] = self.take()
        self.challenge(bye, 401)
        [again] = self.take()
        self.assertIn("Authorization", again.headers)
        self.assertNotIn("Proxy-Authorization", again.headers)

    def test_second_challenge_fails_it(self) -> None:
        """RFC 3261 §22.2: one retry only; a second challenge is final and the call ends."""
        dialog = self.established()
        ended = dialog.bye()
        [bye] = self.take()
        self.challenge(bye)
        [again] = self.take()
        self.challenge(again)
        self.assertEqual(self.take(), [])
        self.successResultOf(ended)
        self.assertNothingLeft()

    def test_other_realm_not_answered(self) -> None:
        """Credentials belong to their realm (issue 14): a challenge for a realm the policy
        does not allow gets no credentials and no retry."""
        dialog = self.established()
        ended = dialog.bye()
        [bye] = self.take()
        self.challenge(bye, realm="harvester.example")
        self.assertEqual(self.take(), [])
        self.successResultOf(ended)
        self.assertNothingLeft()

    def test_any_in_dialog_request(self) -> None:
        """RFC 3261 §22.2 applies to every in-dialog request (re-INVITE, OPTIONS ...):
        ``send_in_dialog`` retries it with its body and a new CSeq, firing with the final
        response."""
        dialog = self.established()
        request = dialog._in_dialog_request("OPTIONS")
        request.headers["Content-Type"] = "application/sdp"
        request.body = b"v=0\r\n"
        d = dialog.send_in_dialog(request)
        [sent] = self.take()
        self.challenge(sent, 401)
        [again] = self.take()
        self.assertEqual((again.method, again.body), ("OPTIONS", b"v=0\r\n"))
        self.assertEqual(again.cseq, (sent.cseq[0] + 1, "OPTIONS"))
        self.assertEqual(dialog.outbound_cseq, again.cseq[0])
        self.core.receive(parse(respond_to(again, 200)), PEER)
        self.assertEqual(self.successResultOf(d).status_code, 200)

    def test_cancel_never_retried(self) -> None:
        """RFC 3261 §22.1: CANCEL cannot be challenged: a 407 to it gets no retry."""
        dialog = Dialog(sip=self.core)
        d = dialog.dial("sip:alice@example.com", session_class=FakeSession)
        [invite] = self.take()
        self.core.receive(parse(respond_to(invite, 180)), PEER)
        d.cancel()
        [cancel] = self.take()
        self.assertEqual(cancel.method, "CANCEL")
        self.challenge(cancel)
        self.assertEqual(self.take(), [])
        self.failureResultOf(d, CancelledError)


class ProgressDialog(Dialog):
    """Records progress_received."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.progress: list[int] = []

    def progress_received(self, status_code: int) -> None:
        self.progress.append(status_code)


class EarlyMediaTests(CoreTestCase):
    """Issue 10 item 3: early media (RFC 3261 §13.2.1, RFC 3960)."""

    EARLY = AVP_OFFER.replace(b"10000", b"30000")

    def dialled(self) -> tuple[ProgressDialog, Any, Request]:
        dialog = ProgressDialog(sip=self.core)
        d = dialog.dial("sip:alice@example.com", session_class=FakeSession)
        [invite] = self.take()
        return dialog, d, invite

    def provisional(self, invite: Request, code: int, body: bytes = b"") -> None:
        headers = [("Content-Type", "application/sdp")] if body else None
        self.core.receive(parse(respond_to(invite, code, body=body, headers=headers)), PEER)

    def test_183_with_sdp_starts_media_before_the_200(self) -> None:
        """RFC 3261 §13.2.1 / RFC 3960: a 183 with SDP starts the call's media with that
        answer (the session hears the far end before the 200); the 200 with the same SDP
        keeps the session running as it is and fires the dial."""
        dialog, d, invite = self.dialled()
        self.provisional(invite, 183, self.EARLY)
        [media] = self.media.created
        self.assertEqual(media.answer, self.EARLY)
        self.assertEqual(dialog.session.started, 1)
        self.assertEqual(dialog.progress, [183])
        self.assertNoResult(d)
        session = dialog.session
        self.core.receive(parse(respond_to(invite, 200, body=self.EARLY)), PEER)
        self.assertIs(self.successResultOf(d), dialog)
        self.assertIs(dialog.session, session)
        self.assertEqual(session.started, 1)

    def test_different_sdp_in_200_updates_media(self) -> None:
        """RFC 3261 §13.2.1: the 2xx carries the answer; a different SDP there replaces the
        early one on the running media."""
        dialog, d, invite = self.dialled()
        self.provisional(invite, 183, self.EARLY)
        final = self.EARLY.replace(b"30000", b"30002")
        self.core.receive(parse(respond_to(invite, 200, body=final)), PEER)
        self.successResultOf(d)
        self.assertEqual(self.media.created[0].answer, final)
        self.assertEqual(dialog.session.started, 1)

    def test_180_without_sdp_only_reports_progress(self) -> None:
        """A 180 without SDP starts nothing; ``progress_received(180)`` tells the app."""
        dialog, d, invite = self.dialled()
        self.provisional(invite, 180)
        self.assertIsNone(dialog.session)
        self.assertEqual(dialog.progress, [180])
        self.core.receive(parse(respond_to(invite, 200, body=self.EARLY)), PEER)
        self.successResultOf(d)
        self.assertEqual(dialog.session.started, 1)

    def test_unusable_early_sdp_ignored(self) -> None:
        """An 18x SDP the media cannot use is ignored; the 200's answer starts the call."""
        dialog, d, invite = self.dialled()
        self.provisional(invite, 183, b"v=0\r\n")
        self.assertIsNone(dialog.session)
        self.core.receive(parse(respond_to(invite, 200, body=self.EARLY)), PEER)
        self.successResultOf(d)
        self.assertEqual(dialog.session.started, 1)

    def test_early_media_stopped_when_the_call_fails(self) -> None:
        """A call refused after early media (announcement, then 486) stops its media."""
        dialog, d, invite = self.dialled()
        self.provisional(invite, 183, self.EARLY)
        self.core.receive(parse(respond_to(invite, 486)), PEER)
        self.failureResultOf(d, CallFailed)
        self.assertTrue(self.media.created[0].stopped)
        self.assertEqual(dialog.session.stopped, 1)
        self.assertEqual(self.core.dialog_count, 0)

    def test_base_dialog_progress_hook_is_a_no_op(self) -> None:
        self.assertIsNone(Dialog().progress_received(183))


class RedirectTests(CoreTestCase):
    """Issue 10 item 5: 3xx redirects (RFC 3261 §8.1.3.4)."""

    def dialled(self, **kwargs: Any) -> tuple[Dialog, Any, Request]:
        dialog = Dialog(sip=self.core)
        d = dialog.dial("sip:alice@example.com", session_class=FakeSession, **kwargs)
        [invite] = self.take()
        return dialog, d, invite

    def redirect(self, request: Request, *contacts: str, code: int = 302) -> list[Any]:
        headers = [("Contact", c) for c in contacts]
        self.core.receive(parse(respond_to(request, code, headers=headers)), PEER)
        return self.take()

    def test_302_tries_contacts_in_q_order(self) -> None:
        """RFC 3261 §8.1.3.4: the Contacts of a 3xx are tried in q order, each with a new
        INVITE transaction (new branch, next CSeq, same Call-ID/From/To, the Contact as
        Request-URI); the one that answers gets the call."""
        dialog, d, invite = self.dialled()
        sent = self.redirect(
            invite,
            "<sip:low@b.example>;q=0.1",
            "<sip:high@c.example>;q=0.9",
            "<sip:mid@d.example>",
        )
        ack, second = sent
        self.assertEqual((ack.method, ack.cseq[0]), ("ACK", invite.cseq[0]))
        self.assertEqual(second.method, "INVITE")
        self.assertEqual(second.uri, "sip:mid@d.example")  # no q: 1.0
        self.assertEqual(second.cseq[0], invite.cseq[0] + 1)
        self.assertNotEqual(second.branch, invite.branch)
        self.assertEqual(
            (second.call_id, second.local_tag, second.headers["To"]),
            (invite.call_id, invite.local_tag, invite.headers["To"]),
        )
        [_ack, third] = self.refuse(second, 480)
        self.assertEqual(third.uri, "sip:high@c.example")
        [_ack, fourth] = self.refuse(third, 404)
        self.assertEqual(fourth.uri, "sip:low@b.example")
        self.core.receive(parse(respond_to(fourth, 200, body=AVP_OFFER)), PEER)
        self.assertIs(self.successResultOf(d), dialog)
        self.assertEqual(dialog.remote_contact, "sip:bob@127.0.0.1:5088;transport=tls")

    def refuse(self, request: Request, code: int) -> list[Any]:
        self.core.receive(parse(respond_to(request, code)), PEER)
        return self.take()

    def test_last_status_when_none_answers(self) -> None:
        """When every target fails, CallFailed carries the last final status."""
        _dialog, d, invite = self.dialled()
        [_ack, second] = self.redirect(invite, "<sip:b@b.example>")
        [_ack] = self.refuse(second, 486)
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 486)
        self.assertNothingLeftButTimers()

    def assertNothingLeftButTimers(self) -> None:
        self.clock.advance(64 * T1)
        self.assertNothingLeft()

    def test_no_target_twice_and_at_most_five(self) -> None:
        """A redirect loop cannot make us call without end: no target is tried twice and a
        dial tries at most MAX_REDIRECT_TARGETS targets; the dial then fails with the 3xx."""
        from voiptwisted.sip.dialog import MAX_REDIRECT_TARGETS

        _dialog, d, invite = self.dialled()
        uris = []
        request = invite
        for n in range(10):
            sent = self.redirect(request, "<sip:alice@example.com>", f"<sip:t{n}@x.example>")
            if len(sent) == 1:
                break
            request = sent[1]
            uris.append(request.uri)
        self.assertEqual(uris, [f"sip:t{n}@x.example" for n in range(MAX_REDIRECT_TARGETS - 1)])
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 302)

    def test_follow_redirects_false(self) -> None:
        """``dial(..., follow_redirects=False)``: a 3xx fails the dial with that status."""
        _dialog, d, invite = self.dialled(follow_redirects=False)
        [_ack] = self.redirect(invite, "<sip:b@b.example>")
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 302)

    def test_class_option_turns_it_off(self) -> None:
        """``Dialog.follow_redirects = False`` (the ``--no-redirects`` option) does the same."""
        no_redirects = type("NoRedirects", (Dialog,), {"follow_redirects": False})
        d = no_redirects(sip=self.core).dial("sip:alice@example.com", session_class=FakeSession)
        [invite] = self.take()
        [_ack] = self.redirect(invite, "<sip:b@b.example>")
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 302)

    def test_sips_never_redirected_to_sip(self) -> None:
        """A sips: call is not downgraded: sip: Contacts of its 3xx are skipped."""
        self.core.media_config = CONFIG
        dialog = Dialog(sip=self.core)
        d = dialog.dial("sips:alice@example.com", session_class=FakeSession)
        [invite] = self.take()
        sent = self.redirect(invite, "<sip:plain@b.example>", "<sips:safe@c.example>")
        self.assertEqual(sent[-1].uri, "sips:safe@c.example")
        [_ack] = self.refuse(sent[-1], 404)
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 404)

    def test_no_usable_contact_fails_with_the_3xx(self) -> None:
        _dialog, d, invite = self.dialled()
        [_ack] = self.redirect(invite, "<tel:+4930123456>", code=301)
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 301)

    def test_503_retry_after_reaches_call_failed(self) -> None:
        """RFC 3261 §21.5.4 / §20.33: CallFailed carries a 503's Retry-After, so the service
        can keep that server out of its list (RFC 3263 §4.3)."""
        _dialog, d, invite = self.dialled()
        self.core.receive(
            parse(respond_to(invite, 503, headers=[("Retry-After", "120 (maintenance)")])), PEER
        )
        failed = self.failureResultOf(d, CallFailed).value
        self.assertEqual((failed.status_code, failed.retry_after), (503, 120.0))

    def test_6xx_ends_the_redirects(self) -> None:
        """RFC 3261 §21.6: a 6xx is a global failure: queued redirect targets are not tried."""
        _dialog, d, invite = self.dialled()
        [_ack, second] = self.redirect(invite, "<sip:b@b.example>", "<sip:c@c.example>;q=0.5")
        [_ack] = self.refuse(second, 603)
        self.assertEqual(self.failureResultOf(d, CallFailed).value.status_code, 603)
