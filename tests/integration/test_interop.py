"""What real carriers and PBXs do that a lab registrar does not (issue 10), against Kamailio
and SIPp on 127.0.0.1: a registrar that ignores CRLF keepalives, a challenged BYE, early
media, redirects.  Every peer is started and stopped by PID through ``tests.integration.peers``.
"""

from __future__ import annotations

import random
from typing import Any

from tests.integration.support import KamailioCallTestCase, eventually
from voiptwisted.media.session import Session
from voiptwisted.sip.dialog import Dialog


class Answering(Dialog):
    """Rings, answers with a silent Session, counts hangups."""

    calls: list[Dialog] = []
    hangups: list[Dialog] = []

    def call_received(self) -> None:
        type(self).calls.append(self)
        self.ringing()
        self.answer(session_class=Session)

    def hangup_received(self) -> None:
        type(self).hangups.append(self)


class InteropTestCase(KamailioCallTestCase):
    timeout = 120
    tmp_prefix = "interop-"

    def setUp(self) -> None:
        Answering.calls, Answering.hangups = [], []
        super().setUp()

    async def register(self, dialog_class: type[Dialog] = Answering, **options: Any) -> Any:
        base = random.randrange(40000, 60000, 2)  # outside the harness port range
        return await self.register_us(dialog_class, port_range=(base, base + 400), **options)

    def assertSippOk(self, result: Any) -> None:
        self.assertTrue(
            result.ok,
            f"SIPp rc={result.returncode} ok={result.successful} failed={result.failed}\n"
            f"{result.errors[-2000:]}",
        )


class SilentRegistrarTests(InteropTestCase):
    """Kamailio with ``tcp_crlf_ping=no``: a registrar without RFC 5626 outbound."""

    kamailio_options = {"crlf_ping": False}

    async def test_flow_survives_unanswered_pings_and_takes_a_call(self) -> None:
        """RFC 5626 §4.2.1 / §4.4.1: the REGISTER 2xx has no ``Require: outbound``, so no
        pong is owed: our pings go unanswered for several intervals, the flow stays the same
        one (no abort, no re-registration on a new flow) and a call arriving at the end
        reaches us and is answered."""
        protocol = await self.register(keepalive=1)
        keepalive = protocol.service.keepalive
        self.assertFalse(keepalive.pong_required)
        # Before issue 10 the first unanswered ping ended the flow after 10 s and no
        # second ping went out on it.
        await eventually(lambda: keepalive.pings_sent >= 4, 8, "four keepalive pings")
        self.assertEqual(keepalive.pongs_received, 0)
        self.assertIs(protocol.service.registration.protocol, protocol)
        self.assertIsNotNone(protocol.transport)
        self.assertTrue(protocol.is_connected)
        uac = self.sipp(
            "uac_call", self.kamailio.address("udp"), service="alice", duration_ms=300,
            timeout=20,
        ).start()
        self.assertSippOk(await self.finish(uac, 30))
        self.assertEqual(len(Answering.calls), 1)
        self.assertIs(protocol.service.registration.protocol, protocol)
        await self.assertNothingLeft(protocol)


class ChallengedByeTests(InteropTestCase):
    """Kamailio answering an in-dialog BYE from a configured user with 407."""

    kamailio_options = {"challenge_bye": True}

    async def test_challenged_bye_reaches_the_callee(self) -> None:
        """RFC 3261 §8.1.3.5 / §22.2: we call bob (SIPp UAS) through Kamailio, hang up, and
        Kamailio challenges our BYE for its realm (the registrar's): we send it again with
        Proxy-Authorization and a new CSeq, Kamailio relays it, SIPp receives it and
        answers 200, and the call is over on both sides."""
        protocol = await self.register()
        uas = self.sipp("uas", service="bob", timeout=30).start()
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
        await dialog.bye()
        self.assertSippOk(await self.finish(uas, 15))
        self.assertIn("BYE challenged", self.kamailio.log)
        self.assertIn("BYE authenticated", self.kamailio.log)
        self.assertEqual(dialog.state.value, "terminated")
        await self.assertNothingLeft(protocol)
