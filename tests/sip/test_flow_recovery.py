"""Calls across a lost flow: who may carry them on, and the target refresh that follows.

Issue 14 finding 7: a dead flow's calls were adopted by *any* later connection of the same
factory (Mallory's took Alice's call; the next caller inherited an attacker's calls and got
503).  Now only a new flow of our own reconnecting client adopts them all; a listener's
calls continue only when an in-dialog request arrives from the same peer host (RFC 3261
§12.2.2: a dialog is not bound to one connection).

Issue 17 item 1: after our flow to the registrar is replaced, each adopted call sends a
target refresh with the new Contact (RFC 5626 §4.2.1, RFC 3261 §12.2): a re-INVITE with
the media unchanged, or an UPDATE (RFC 3311) when the peer allows it.  All on task.Clock.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from tests.sip.test_dialog import (
    ANSWER,
    AVP_OFFER,
    CONFIG,
    SESSION_TIMERS,
    FakeSession,
    callee_class,
    invite_bytes,
    make_media_class,
    respond_to,
    written,
)
from voiptwisted.sip import dialog as dialog_module
from voiptwisted.sip import protocol as protocol_module
from voiptwisted.sip.dialog import Dialog, DialogState
from voiptwisted.sip.message import Request
from voiptwisted.sip.protocol import SessionInitiationProtocol, SIPClientFactory
from voiptwisted.sip.registration import RegistrationFailed
from voiptwisted.sip.transaction import T1

ALICE, MALLORY = "127.0.0.1", "127.0.0.66"


def refreshable_media_class() -> Any:
    """The fake CallMedia of test_dialog with ``refresh_offer`` (our SDP, unchanged)."""
    base = make_media_class()

    class Media(base):  # type: ignore[misc, valid-type]
        refresh_offers = 0

        def refresh_offer(self) -> bytes:
            type(self).refresh_offers += 1
            return self.local_sdp

    return Media


def attach(proto: SessionInitiationProtocol, peer: str, peer_port: int, port: int = 5070
           ) -> StringTransport:
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "127.0.0.1", port),
        peerAddress=IPv4Address("TCP", peer, peer_port),
    )
    proto.makeConnection(transport)
    return transport


def not_acks(transport: StringTransport) -> list[Any]:
    """What was written, without the ACK an INVITE transaction sends for a non-2xx
    final response (RFC 3261 §17.1.1.3)."""
    return [m for m in written(transport) if getattr(m, "method", None) != "ACK"]


def in_dialog(method: str, to_tag: str, *, cseq: int, branch: str) -> bytes:
    return invite_bytes(method=method, body=b"", to_tag=to_tag, cseq=cseq, branch=branch)


class FlowTestCase(SynchronousTestCase):
    """One factory (a listener unless ``outbound``); calls from Alice answered on it."""

    outbound = False

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.media = refreshable_media_class()
        self.callee = callee_class("answer")
        self.registration = ControlledRegistration() if self.outbound else None
        self.factory = SIPClientFactory(
            aor="sip:bob@example.com",
            reactor=self.clock,
            media_class=self.media,
            media_config=CONFIG,
            dialog_class=self.callee,
            outbound=self.outbound,
            registration=self.registration,
        )

    def flow(self, peer: str = ALICE, peer_port: int = 5061, port: int = 5070
             ) -> tuple[SessionInitiationProtocol, StringTransport]:
        proto = self.factory.buildProtocol(None)
        return proto, attach(proto, peer, peer_port, port)

    def answered_call(self, proto: SessionInitiationProtocol, transport: StringTransport,
                      call_id: str = "call-1@example.com", extra: str = "") -> Dialog:
        proto.dataReceived(invite_bytes(call_id=call_id, branch=f"z9hG4bK{call_id}",
                                        extra=extra))
        ok = written(transport)[-1]
        self.assertEqual(ok.status_code, 200)
        proto.dataReceived(invite_bytes(method="ACK", body=b"", to_tag=ok.remote_tag,
                                        call_id=call_id, branch=f"z9hG4bKack{call_id}"))
        dialog = self.callee.instances[-1]
        self.assertIs(dialog.state, DialogState.CONFIRMED)
        return dialog

    def drop(self, proto: SessionInitiationProtocol) -> None:
        proto.connectionLost(Failure(ConnectionLost()))


class ControlledRegistration:
    """A registration hook whose success on the new flow the test decides."""

    def __init__(self) -> None:
        self.waiters: list[Deferred[Any]] = []

    def connection_made(self, protocol: Any) -> None:
        pass

    def connection_lost(self, protocol: Any, reason: Any = None) -> None:
        pass

    def when_registered(self) -> Deferred[Any]:
        d: Deferred[Any] = Deferred(lambda d: self.waiters.remove(d))
        self.waiters.append(d)
        return d

    def succeed(self, protocol: Any) -> None:
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.callback(protocol)

    def refuse(self) -> None:
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.errback(RegistrationFailed("registration refused: 403 Forbidden", 403))


class OrphanHijackTests(FlowTestCase):
    """Issue 14 finding 7: no connection of another peer takes over a call."""

    def test_other_peer_cannot_take_over_alice_call(self) -> None:
        """Mallory connects after Alice's flow dropped: Mallory's BYE for Alice's call gets
        481 and leaves it up; Alice's BYE on her new flow gets 200 (it used to be the other
        way round: the call had moved to Mallory's connection)."""
        first, transport = self.flow()
        dialog = self.answered_call(first, transport)
        self.drop(first)
        mallory, mallory_transport = self.flow(MALLORY, 40000)
        self.assertEqual(mallory.dialog_count, 0)
        mallory.dataReceived(in_dialog("BYE", dialog.local_tag, cseq=2, branch="z9hG4bKm"))
        [refused] = written(mallory_transport)
        self.assertEqual(refused.status_code, 481)
        self.assertIs(dialog.state, DialogState.CONFIRMED)
        self.assertFalse(self.media.created[0].stopped)

        again, again_transport = self.flow(ALICE, 40002)
        again.dataReceived(in_dialog("BYE", dialog.local_tag, cseq=2, branch="z9hG4bKa"))
        [ok] = written(again_transport)
        self.assertEqual(ok.status_code, 200)
        self.assertIs(dialog.state, DialogState.TERMINATED)
        self.assertEqual(self.callee.hangups, 1)
        self.assertEqual((again.dialog_count, again.pending_timer_count), (0, 0))
        self.assertEqual(dict(protocol_module._ORPHANS.get(self.factory, {})), {})

    def test_attacker_orphans_not_inherited(self) -> None:
        """An attacker fills its flow up to the dialog limit and drops it: the next caller
        (another host) gets its call answered, not 503, and carries none of those calls."""
        attacker, transport = self.flow(MALLORY, 40000)
        attacker.dialog_limit = 2
        for n in range(2):
            self.answered_call(attacker, transport, call_id=f"flood-{n}@evil")
        self.drop(attacker)
        caller, caller_transport = self.flow(ALICE, 40002)
        caller.dialog_limit = 2
        self.assertEqual(caller.dialog_count, 0)
        self.answered_call(caller, caller_transport, call_id="legit@example.com")
        self.assertEqual(caller.dialog_count, 1)

    def test_listener_orphan_ends_on_its_timer(self) -> None:
        """A peer's call that no request claims ends when its orphan timer runs out, and
        leaves the factory's orphan table (nothing grows with dead calls)."""
        first, transport = self.flow()
        dialog = self.answered_call(first, transport)
        self.drop(first)
        self.flow(ALICE, 40002)
        self.clock.advance(dialog.orphan_timeout)
        self.assertIs(dialog.state, DialogState.TERMINATED)
        self.assertTrue(self.media.created[0].stopped)
        self.assertEqual(first.pending_timer_count, 0)
        self.assertEqual(dict(protocol_module._ORPHANS.get(self.factory, {})), {})

    def test_same_host_claims_only_the_call_it_names(self) -> None:
        """RFC 3261 §12.2.2: Alice's proxy re-sends an in-dialog request on a new connection:
        that call (only) continues there; her other orphaned call stays where it was."""
        first, transport = self.flow()
        one = self.answered_call(first, transport, call_id="one@example.com")
        two = self.answered_call(first, transport, call_id="two@example.com")
        self.drop(first)
        again, again_transport = self.flow(ALICE, 40002)
        again.dataReceived(invite_bytes(method="OPTIONS", body=b"", to_tag=one.local_tag,
                                        call_id="one@example.com", cseq=2, branch="z9hG4bKo"))
        [ok] = written(again_transport)
        self.assertEqual(ok.status_code, 200)
        self.assertIs(one.sip, again)
        self.assertIs(two.sip, first)
        self.assertEqual(again.dialog_count, 1)

    def test_wrong_remote_tag_claims_nothing(self) -> None:
        """A request that names our tag but not the peer's (From tag) claims nothing."""
        first, transport = self.flow()
        dialog = self.answered_call(first, transport)
        self.drop(first)
        again, again_transport = self.flow(ALICE, 40002)
        bye = in_dialog("BYE", dialog.local_tag, cseq=2, branch="z9hG4bKw").replace(
            b"tag=alicetag", b"tag=guessed"
        )
        again.dataReceived(bye)
        [refused] = written(again_transport)
        self.assertEqual(refused.status_code, 481)
        self.assertIs(dialog.sip, first)


class TargetRefreshTests(FlowTestCase):
    """Issue 17 item 1: our flow to the registrar replaced -> target refresh per call."""

    outbound = True

    def setUp(self) -> None:
        super().setUp()
        self.first, transport = self.flow()
        self.dialog = self.answered_call(self.first, transport)
        self.drop(self.first)

    def recover(self) -> tuple[SessionInitiationProtocol, StringTransport]:
        """The new flow (our port 5071) comes up and registers."""
        second, transport = self.flow(port=5071)
        self.assertIs(self.dialog.sip, second)
        self.assertEqual(written(transport), [])  # not before the registrar accepted it
        self.registration.succeed(second)
        return second, transport

    def test_reinvite_with_new_contact_and_same_sdp(self) -> None:
        """RFC 5626 §4.2.1, RFC 3261 §12.2.1.1 / §14.1: once the new flow is registered the
        call sends a re-INVITE to the remote target, through its route set, with our new
        Contact and its SDP unchanged; the 2xx is ACKed (§13.2.2.4) and the answer applied;
        the call is reachable again (orphan timer gone) and the peer's BYE ends it there."""
        second, transport = self.recover()
        [reinvite] = written(transport)
        self.assertEqual(reinvite.method, "INVITE")
        self.assertEqual(reinvite.uri, "sip:alice@127.0.0.1:5099;transport=tls")
        self.assertIn("127.0.0.1:5071", reinvite.headers["Contact"])
        self.assertIn(";ob", reinvite.headers["Contact"])
        self.assertEqual(reinvite.remote_tag, "alicetag")
        self.assertEqual(reinvite.local_tag, self.dialog.local_tag)
        self.assertEqual(reinvite.body, ANSWER)
        self.assertEqual(reinvite.headers["Content-Type"], "application/sdp")
        # RFC 3262 §4: this re-INVITE's 18x would not be PRACKed, so it offers no 100rel
        self.assertNotIn("100rel", reinvite.headers.getlist("Supported"))
        second.dataReceived(respond_to(reinvite, 200, to_tag="alicetag", body=AVP_OFFER,
                                       headers=[("Content-Type", "application/sdp")]))
        [ack] = written(transport)
        self.assertEqual((ack.method, ack.cseq), ("ACK", (reinvite.cseq[0], "ACK")))
        self.assertEqual(ack.uri, "sip:bob@127.0.0.1:5088;transport=tls")  # §12.2.1.2
        self.assertEqual(self.media.created[0].answer, AVP_OFFER)
        self.assertIs(self.dialog.state, DialogState.CONFIRMED)
        self.assertEqual(second.pending_timer_count, SESSION_TIMERS)
        second.dataReceived(in_dialog("BYE", self.dialog.local_tag, cseq=2, branch="z9hG4bKb"))
        [ok] = written(transport)
        self.assertEqual(ok.status_code, 200)
        self.assertEqual((second.dialog_count, second.transaction_count), (0, 0))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_481_ends_call_with_bye_on_new_flow(self) -> None:
        """RFC 3261 §12.2.1.2: 481 to the refresh ends the call, BYE on the new flow."""
        second, transport = self.recover()
        [reinvite] = written(transport)
        second.dataReceived(respond_to(reinvite, 481, to_tag="alicetag"))
        [bye] = not_acks(transport)
        self.assertEqual(bye.method, "BYE")
        self.assertIn("127.0.0.1:5071", bye.headers["Via"])
        self.assertTrue(self.media.created[0].stopped)
        self.assertEqual(self.callee.hangups, 1)
        second.dataReceived(respond_to(bye, 200, to_tag="alicetag"))
        self.assertEqual((second.dialog_count, second.pending_timer_count), (0, 0))

    def test_no_response_ends_call(self) -> None:
        """RFC 3261 §12.2.1.2 / §17.1.1.2: a refresh timing out (Timer B) is a 408: BYE."""
        _, transport = self.recover()
        [reinvite] = written(transport)
        self.assertEqual(reinvite.method, "INVITE")
        self.clock.advance(64 * T1)
        [bye] = written(transport)
        self.assertEqual(bye.method, "BYE")
        self.assertEqual(self.callee.hangups, 1)

    def test_other_refusal_keeps_call(self) -> None:
        """RFC 3261 §14.1: any other refusal leaves the session as it was."""
        second, transport = self.recover()
        [reinvite] = written(transport)
        second.dataReceived(respond_to(reinvite, 488, to_tag="alicetag"))
        self.assertEqual(not_acks(transport), [])
        self.assertIs(self.dialog.state, DialogState.CONFIRMED)
        self.assertFalse(self.media.created[0].stopped)

    def test_glare_491_retried_after_random_delay(self) -> None:
        """RFC 3261 §14.1: after 491 the callee (not the Call-ID's owner) waits 0-2 s in
        10 ms units; the retry is a new re-INVITE with a higher CSeq."""
        chosen: list[int] = []

        def randbelow(n: int) -> int:
            chosen.append(n)
            return n - 1

        self.patch(dialog_module.secrets, "randbelow", randbelow)
        second, transport = self.recover()
        [first] = written(transport)
        second.dataReceived(respond_to(first, 491, to_tag="alicetag"))
        self.assertEqual(not_acks(transport), [])
        self.assertEqual(chosen, [201])
        self.clock.advance(2.0 - 0.01)
        self.assertEqual(not_acks(transport), [])
        self.clock.advance(0.01)
        [retry] = not_acks(transport)
        self.assertEqual(retry.method, "INVITE")
        self.assertGreater(retry.cseq[0], first.cseq[0])

    def test_glare_retries_bounded(self) -> None:
        """A peer answering 491 for ever gets ``refresh_retries`` retries, not a loop."""
        second, transport = self.recover()
        for _ in range(self.dialog.refresh_retries + 1):
            [reinvite] = not_acks(transport)
            second.dataReceived(respond_to(reinvite, 491, to_tag="alicetag"))
            self.clock.advance(2.0)
        self.assertEqual(not_acks(transport), [])
        self.assertIs(self.dialog.state, DialogState.CONFIRMED)

    def test_peer_reinvite_during_refresh_gets_491(self) -> None:
        """RFC 3261 §14.2: a re-INVITE from the peer while ours is pending gets 491."""
        second, transport = self.recover()
        [_] = written(transport)
        second.dataReceived(invite_bytes(to_tag=self.dialog.local_tag, cseq=2,
                                         branch="z9hG4bKpeer"))
        self.assertEqual([m.status_code for m in written(transport)], [100, 491])

    def test_waits_for_peer_reinvite_to_complete(self) -> None:
        """RFC 3261 §14.1: no re-INVITE while another INVITE transaction is in progress
        either way: the peer's re-INVITE answered but not yet ACKed delays our refresh by
        the random delay; after the ACK it goes out."""
        self.patch(dialog_module.secrets, "randbelow", lambda n: n - 1)
        second, transport = self.flow(port=5071)
        second.dataReceived(invite_bytes(to_tag=self.dialog.local_tag, cseq=2,
                                         branch="z9hG4bKpeer"))
        self.assertEqual([m.status_code for m in written(transport)], [100, 200])
        self.registration.succeed(second)
        self.assertEqual(written(transport), [])
        second.dataReceived(invite_bytes(method="ACK", body=b"", to_tag=self.dialog.local_tag,
                                         cseq=2, branch="z9hG4bKpeerack"))
        self.clock.advance(2.0)
        [reinvite] = written(transport)
        self.assertEqual(reinvite.method, "INVITE")

    def test_refresh_waits_through_refused_registration(self) -> None:
        """A refused re-registration sends nothing; the refresh follows the later success."""
        second, transport = self.flow(port=5071)
        self.registration.refuse()
        self.assertEqual(written(transport), [])
        self.registration.succeed(second)
        [reinvite] = written(transport)
        self.assertEqual(reinvite.method, "INVITE")

    def test_flow_lost_again_before_registration(self) -> None:
        """A flow that dies before registering sends nothing; the next one refreshes."""
        second, transport = self.flow(port=5071)
        self.drop(second)
        self.assertEqual(self.registration.waiters, [])
        _, third_transport = self.recover_on(5072)
        [reinvite] = written(third_transport)
        self.assertIn("127.0.0.1:5072", reinvite.headers["Contact"])
        self.assertEqual(written(transport), [])

    def recover_on(self, port: int) -> tuple[SessionInitiationProtocol, StringTransport]:
        proto, transport = self.flow(port=port)
        self.registration.succeed(proto)
        return proto, transport

    def test_flow_lost_during_refresh_keeps_orphan(self) -> None:
        """The refresh's flow dies too: no BYE, the call is an orphan again and the next
        flow refreshes it."""
        second, transport = self.recover()
        [_] = written(transport)
        self.drop(second)
        self.assertIs(self.dialog.state, DialogState.CONFIRMED)
        _, third_transport = self.recover_on(5072)
        [reinvite] = written(third_transport)
        self.assertEqual(reinvite.method, "INVITE")


class UpdateRefreshTests(FlowTestCase):
    """RFC 3311 §5.1: UPDATE is a target refresh too, without touching the media."""

    outbound = True

    def test_update_when_peer_allows_it(self) -> None:
        first, transport = self.flow()
        dialog = self.answered_call(first, transport,
                                    extra="Allow: INVITE, ACK, BYE, CANCEL, UPDATE\r\n")
        self.drop(first)
        second, transport = self.flow(port=5071)
        self.registration.succeed(second)
        [update] = written(transport)
        self.assertEqual(update.method, "UPDATE")
        self.assertEqual(update.body, b"")
        self.assertIn("127.0.0.1:5071", update.headers["Contact"])
        second.dataReceived(respond_to(update, 200, to_tag="alicetag"))
        self.assertEqual(written(transport), [])  # no ACK for UPDATE
        self.assertEqual(self.media.refresh_offers, 0)
        self.assertEqual(second.pending_timer_count, SESSION_TIMERS)
        self.assertIs(dialog.state, DialogState.CONFIRMED)


class OutboundCallRefreshTests(FlowTestCase):
    """A call we placed: we own the Call-ID, so glare waits 2.1-4 s (RFC 3261 §14.1)."""

    outbound = True

    def test_caller_glare_delay(self) -> None:
        self.patch(dialog_module.secrets, "randbelow", lambda n: 0)
        first, transport = self.flow()
        dialog = Dialog(sip=first)
        dialog.dial("sip:carol@example.com", session_class=FakeSession)
        [invite] = written(transport)
        first.dataReceived(respond_to(invite, 200, body=ANSWER,
                                      headers=[("Content-Type", "application/sdp")]))
        [ack] = written(transport)
        self.assertEqual(ack.method, "ACK")
        self.assertIs(dialog.state, DialogState.CONFIRMED)
        self.drop(first)
        second, transport = self.flow(port=5071)
        self.registration.succeed(second)
        [reinvite] = written(transport)
        self.assertEqual(reinvite.uri, "sip:bob@127.0.0.1:5088;transport=tls")
        self.assertEqual(reinvite.body, invite.body)
        self.assertIsInstance(reinvite, Request)
        second.dataReceived(respond_to(reinvite, 491))
        self.clock.advance(2.1 - 0.01)
        self.assertEqual(not_acks(transport), [])
        self.clock.advance(0.01)
        [retry] = not_acks(transport)
        self.assertEqual(retry.method, "INVITE")


class EarlyDialogTests(FlowTestCase):
    """Decision (issue 17 item 1): an early dialog is neither adopted nor refreshed."""

    outbound = True

    def test_ringing_call_ends_with_its_flow(self) -> None:
        self.callee = callee_class("ring")
        self.factory.kwargs["dialog_class"] = self.callee
        first, transport = self.flow()
        first.dataReceived(invite_bytes())
        [dialog] = self.callee.instances
        self.drop(first)
        self.assertIs(dialog.state, DialogState.TERMINATED)
        second, transport = self.flow(port=5071)
        self.registration.succeed(second)
        self.assertEqual((second.dialog_count, written(transport)), (0, []))
