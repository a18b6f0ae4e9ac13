"""Call transfer against SIPp through Kamailio: REFER (RFC 3515) and Replaces (RFC 3891).

Our UA registers over TLS as ``alice`` and answers with an echo.  For the blind transfer a
SIPp UAS registers as ``bob`` (UDP contact); a SIPp UAC calls alice through Kamailio
(``sipp/uac_refer.xml``), then sends REFER with ``Refer-To: <sip:bob@kamailio>``: the
scenario fails unless we answer 202, NOTIFY ``SIP/2.0 100 Trying`` then ``SIP/2.0 200 OK``
(terminated), and end its call with BYE; bob must have been called by us.  For Replaces a
first SIPp call (``uac_replaced.xml``) is taken over by a second SIPp INVITE naming it in
``Replaces`` (``uac_replaces.xml``): the second is answered without 420, the first gets BYE.
"""

from __future__ import annotations

import random
from typing import Any

from tests.integration.support import EchoDialog, KamailioCallTestCase, eventually
from voiptwisted.sip.dialog import DialogState


class SippTransferTests(KamailioCallTestCase):
    timeout = 120
    tmp_prefix = "transfer-sipp-"

    async def register(self) -> Any:
        base = random.randrange(40000, 60000, 2)  # outside the harness port range
        return await self.register_us(EchoDialog, port_range=(base, base + 400))

    def assertSippOk(self, result: Any) -> None:
        self.assertTrue(
            result.ok,
            f"SIPp rc={result.returncode} ok={result.successful} failed={result.failed}\n"
            f"{result.errors[-2000:]}\n{result.log[-2000:]}",
        )

    async def test_blind_transfer_with_notify_sipfrag(self) -> None:
        """RFC 3515 §2.4.2, §2.4.4, §2.4.5: SIPp transfers its call with us to bob (another
        SIPp, registered at Kamailio): we answer 202, NOTIFY 100 Trying (active), call bob
        through Kamailio, NOTIFY 200 OK (terminated;reason=noresource), then BYE the first
        call; our call with bob is up and ends with our BYE."""
        protocol = await self.register()
        uas = self.sipp("uas", service="bob", timeout=40, tmpdir=self.tmpdir()).start()
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
        transferor = self.sipp(
            "uac_refer",
            self.kamailio.address("tcp"),
            transport="t1",
            service="alice",
            keys={"refer_to": f"sip:bob@{host}:{port}"},
            timeout=30,
            tmpdir=self.tmpdir(),
        ).start()
        self.assertSippOk(await self.finish(transferor, 40))

        def bob_call() -> Any:
            return [
                d for d in protocol.dialogs
                if not d.inbound and d.state is DialogState.CONFIRMED and d.session is not None
            ]

        [call] = await eventually(bob_call, 15, "our call to bob")
        self.assertIn("bob", str(call.remote_party))
        await call.bye()
        self.assertSippOk(await self.finish(uas, 15))
        await self.assertNothingLeft(protocol)

    async def test_invite_with_replaces_takes_the_call_over(self) -> None:
        """RFC 3891 §3: an INVITE whose Replaces names our call with SIPp (its Call-ID, our
        tag as to-tag, SIPp's as from-tag) and that requires ``replaces`` is answered (no
        420) and the replaced call gets BYE once the new one is confirmed."""
        protocol = await self.register()
        first = self.sipp(
            "uac_replaced",
            self.kamailio.address("tcp"),
            transport="t1",
            service="alice",
            timeout=30,
            tmpdir=self.tmpdir(),
        ).start()

        def confirmed() -> Any:
            return [d for d in protocol.dialogs if d.state is DialogState.CONFIRMED
                    and d.session is not None]

        [old] = await eventually(confirmed, 15, "the first call")
        replaces = f"{old.call_id};to-tag={old.local_tag};from-tag={old.remote_tag}"
        second = self.sipp(
            "uac_replaces",
            self.kamailio.address("tcp"),
            transport="t1",
            service="alice",
            keys={"replaces": replaces},
            timeout=30,
            tmpdir=self.tmpdir(),
        ).start()
        self.assertSippOk(await self.finish(first, 40))
        self.assertSippOk(await self.finish(second, 40))
        self.assertEqual(old.state, DialogState.TERMINATED)
        await self.assertNothingLeft(protocol)
