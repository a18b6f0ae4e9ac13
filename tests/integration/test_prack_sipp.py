"""Reliable provisional responses (RFC 3262) against SIPp through Kamailio, both roles.

Our UA registers over TLS as alice.  UAS: SIPp calls alice with ``Require: 100rel``
(``sipp/uac_100rel.xml``); we answer with a reliable 183 carrying our SDP, SIPp PRACKs
it, and only then our 200 goes out; ACK, BYE.  UAC: we call bob, a SIPp UAS registered
over UDP (``sipp/uas_100rel.xml``) that checks our ``Supported: 100rel``, answers 183
with ``Require: 100rel``, ``RSeq`` and SDP (resent until our PRACK), checks our ``RAck``
and sends its 200 after the PRACK.  SIPp fails the call on any other message.
"""

from __future__ import annotations

import random
from typing import Any

from tests.integration.support import KamailioCallTestCase
from voiptwisted.media.session import Session
from voiptwisted.sip.dialog import Dialog


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
