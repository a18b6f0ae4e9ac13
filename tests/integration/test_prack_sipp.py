"""Reliable provisional responses (RFC 3262) against SIPp through Kamailio, both roles.

Our UA registers over TLS as alice.  UAS: SIPp calls alice with ``Require: 100rel``
(``sipp/uac_100rel.xml``); we answer with a reliable 183 carrying our SDP, SIPp PRACKs
it, and only then our 200 goes out; ACK, BYE.  UAC: we call bob, a SIPp UAS registered
over UDP (``sipp/uas_100rel.xml``) that checks our ``Supported: 100rel``, answers 183
with ``Require: 100rel``, ``RSeq`` and SDP (resent until our PRACK), checks our ``RAck``
and sends its 200 after the PRACK.  SIPp fails the call on any other message.

The same flows with an UPDATE offer between the PRACK and the 200 (RFC 3311 §5.1,
``sipp/uac_100rel_update.xml`` and ``sipp/uas_100rel_update.xml``): the early dialog's
UPDATE is answered in its 200 and applied, by us as UAS and as UAC.  And our own early
media (RFC 3960): a session started by ``session_progress`` whose tone SIPp echoes back
to us before we answer.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from tests.integration.support import KamailioCallTestCase, eventually
from voiptwisted.media.session import Session
from voiptwisted.sip.dialog import Dialog, DialogState


class Progressing(Dialog):
    """Sends 183 with our SDP, then answers (the 200 waits for the 183's PRACK)."""

    calls: list[Progressing] = []
    hangups: list[Progressing] = []

    def call_received(self) -> None:
        type(self).calls.append(self)
        self.session_progress()
        self.answer(session_class=Session)

    def hangup_received(self) -> None:
        type(self).hangups.append(self)


class PrackTests(KamailioCallTestCase):
    timeout = 120
    tmp_prefix = "prack-sipp-"

    def setUp(self) -> None:
        Progressing.calls, Progressing.hangups = [], []
        super().setUp()

    async def register(self) -> Any:
        base = random.randrange(40000, 60000, 2)
        return await self.register_us(Progressing, port_range=(base, base + 200))

    def assertSippOk(self, result: Any) -> None:
        self.assertTrue(
            result.ok,
            f"SIPp rc={result.returncode} ok={result.successful} failed={result.failed}\n"
            f"{result.errors[-2000:]}\n{result.log[-2000:]}",
        )

    async def test_uas_reliable_183_prack_then_200(self) -> None:
        """RFC 3262 §3 / §5 (UAS): SIPp's INVITE requires 100rel (no 420 any more); our 183
        carries Require: 100rel, an RSeq and our SDP answer, SIPp's PRACK gets 200 and our
        200 to the INVITE comes after it (SIPp expects exactly that order); ACK, BYE, and
        nothing of the call is left on our side."""
        protocol = await self.register()
        sipp = self.sipp(
            "uac_100rel", self.kamailio.address("tcp"), transport="t1", service="alice",
            timeout=30, tmpdir=self.tmpdir(),
        )
        sipp.start()
        self.assertSippOk(await self.finish(sipp, 40))
        [call] = Progressing.calls
        self.assertEqual(call.state.value, "terminated")
        self.assertEqual(len(Progressing.hangups), 1)
        await self.assertNothingLeft(protocol)

    async def test_uac_prack_for_reliable_183(self) -> None:
        """RFC 3262 §4 / §7.2 (UAC): our INVITE supports 100rel; bob's reliable 183 with SDP
        (RSeq 4711, resent until PRACKed) gets one PRACK with ``RAck: 4711 <CSeq> INVITE``
        (SIPp checks it), its retransmissions are ignored, its SDP starts early media
        (progress_received hears 183 once), and the 200 that follows the PRACK completes
        the call."""
        protocol = await self.register()
        uas = self.sipp("uas_100rel", service="bob", timeout=40).start()
        register = self.sipp(
            "register",
            self.kamailio.address("udp"),
            service="bob",
            auth=("bob", self.kamailio.users["bob"]),
            keys={"contact_host": "127.0.0.1", "contact_port": uas.local_port, "expires": 60},
            timeout=10,
        ).start()
        self.assertSippOk(await self.finish(register, 15))
        host, port = self.kamailio.address("tls")
        dialog = Dialog(sip=protocol)
        progress: list[int] = []
        dialog.progress_received = progress.append  # type: ignore[method-assign]
        await dialog.dial(f"sip:bob@{host}:{port}", session_class=Session)
        self.assertEqual(progress, [183])
        await dialog.bye()
        self.assertSippOk(await self.finish(uas, 20))
        await self.assertNothingLeft(protocol)


class EarlyOnly(Dialog):
    """Sends 183 with our SDP and leaves the answer to the test."""

    calls: list[EarlyOnly] = []

    def call_received(self) -> None:
        type(self).calls.append(self)
        self.session_progress()


def direction(dialog: Dialog) -> str | None:
    negotiated = getattr(dialog.media, "negotiated", None)
    return getattr(negotiated, "direction", None)


class EarlyUpdateTests(KamailioCallTestCase):
    """RFC 3311 §5.1: an UPDATE offer in the early dialog, after a reliable 183 with SDP and
    its PRACK, answered in the UPDATE's 200 and applied, as UAS and as UAC."""

    timeout = 120
    tmp_prefix = "early-update-sipp-"
    register = PrackTests.register
    assertSippOk = PrackTests.assertSippOk

    async def test_uas_early_update_answered_before_the_200(self) -> None:
        """RFC 3311 §5.1/§5.2 (UAS): SIPp PRACKs our reliable 183, then offers sendonly in
        an UPDATE before any 2xx; our 200 to it answers recvonly (SIPp checks it) and the
        media takes it; the 200 we then send to the INVITE has no SDP (SIPp checks
        Content-Length: 0, RFC 3261 §13.2.1); ACK, BYE."""
        EarlyOnly.calls = []
        base = random.randrange(40000, 60000, 2)
        protocol = await self.register_us(EarlyOnly, port_range=(base, base + 200))
        sipp = self.sipp(
            "uac_100rel_update", self.kamailio.address("tcp"), transport="t1",
            service="alice", timeout=30, tmpdir=self.tmpdir(),
        )
        sipp.start()
        call = await eventually(lambda: EarlyOnly.calls and EarlyOnly.calls[0], 20, "the call")
        await eventually(lambda: direction(call) == "recvonly", 20, "the early UPDATE")
        self.assertIs(call.state, DialogState.EARLY)
        call.answer(session_class=Session)
        self.assertSippOk(await self.finish(sipp, 40))
        self.assertIs(call.state, DialogState.TERMINATED)
        await self.assertNothingLeft(protocol)

    async def test_uac_early_update_answered_before_the_200(self) -> None:
        """RFC 3311 §5.1/§5.2 (UAC): bob's reliable 183 with SDP is PRACKed, then bob's
        UPDATE offers sendonly before its 200; we answer recvonly in the UPDATE's 200
        (SIPp checks it), the call goes on with that media after bob's 200; BYE."""
        protocol = await self.register()
        uas = self.sipp("uas_100rel_update", service="bob", timeout=40).start()
        register = self.sipp(
            "register",
            self.kamailio.address("udp"),
            service="bob",
            auth=("bob", self.kamailio.users["bob"]),
            keys={"contact_host": "127.0.0.1", "contact_port": uas.local_port, "expires": 60},
            timeout=10,
        ).start()
        self.assertSippOk(await self.finish(register, 15))
        host, port = self.kamailio.address("tls")
        dialog = Dialog(sip=protocol)
        await dialog.dial(f"sip:bob@{host}:{port}", session_class=Session)
        self.assertEqual(direction(dialog), "recvonly")
        await dialog.bye()
        self.assertSippOk(await self.finish(uas, 20))
        await self.assertNothingLeft(protocol)


class Announcement(Session):
    """Sends a loud tone from its start and counts the loud frames it hears back."""

    def start(self) -> None:
        self.heard = 0
        rate = self.sample_rate
        t = np.arange(rate * 2) / rate
        self.send_audio(np.sin(2 * np.pi * 440 * t) * 12000)

    def audio_received(self, samples: np.ndarray) -> None:
        if int(np.abs(samples.astype(np.int32)).max()) > 3000:
            self.heard += 1


class Announcing(Dialog):
    """Plays the announcement from a reliable 183, before any answer (RFC 3960)."""

    calls: list[Announcing] = []

    def call_received(self) -> None:
        type(self).calls.append(self)
        self.session_progress(session_class=Announcement)


class EarlyMediaTests(KamailioCallTestCase):
    """RFC 3960 §3 / RFC 3262: our own early media as UAS, heard before the 200."""

    timeout = 120
    tmp_prefix = "early-media-sipp-"
    assertSippOk = PrackTests.assertSippOk

    async def test_announcement_before_the_answer(self) -> None:
        """RFC 3960 §3: session_progress(session_class=...) starts our session with the
        reliable 183; SIPp (uac_100rel, echoing the RTP it gets) PRACKs it and waits for
        the 200, and our tone comes back to us through SIPp while the call is still
        early; then we answer, SIPp ACKs and hangs up."""
        Announcing.calls = []
        base = random.randrange(40000, 60000, 2)
        protocol = await self.register_us(Announcing, port_range=(base, base + 200))
        sipp = self.sipp(
            "uac_100rel", self.kamailio.address("tcp"), transport="t1", service="alice",
            rtp_echo=True, timeout=40, tmpdir=self.tmpdir(),
        )
        sipp.start()
        call = await eventually(lambda: Announcing.calls and Announcing.calls[0], 20, "the call")
        await eventually(lambda: call.session is not None and call.session.heard >= 5, 20,
                         "our announcement echoed back before the answer")
        self.assertIs(call.state, DialogState.EARLY)
        call.answer(session_class=Session)
        self.assertIsInstance(call.session, Announcement)
        self.assertSippOk(await self.finish(sipp, 40))
        await self.assertNothingLeft(protocol)
