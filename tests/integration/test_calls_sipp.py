"""Calls through a real Kamailio over TLS, driven by SIPp on 127.0.0.1 (RFC 3261 §9-§17).

Our UA registers over TLS with ``voiptwisted.sip.connect.run``; SIPp reaches it through
Kamailio (SIPp has no TLS here: it talks UDP to Kamailio, which relays on our TLS flow).
SIPp runs in the background and is polled without blocking the reactor, because our UA
answers on the same reactor.  Everything is started and stopped by PID through
``tests.integration.peers``.
"""

from __future__ import annotations

import random
from typing import Any

from tests.integration.support import EchoDialog, KamailioCallTestCase, eventually, sleep
from voiptwisted.media.session import EchoSession, Session
from voiptwisted.sip.dialog import Dialog
from voiptwisted.sip.message import Request


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


class RingingOnly(Answering):
    """Rings and never answers (the caller CANCELs)."""

    def call_received(self) -> None:
        type(self).calls.append(self)
        self.ringing()


class HoldAwareEcho(EchoSession):
    """An echo that records the directions re-INVITEs gave it (``media_changed``)."""

    changes: list[str] = []

    def media_changed(self, direction: str) -> None:
        type(self).changes.append(direction)


class HoldAwareEchoDialog(EchoDialog):
    session_class = HoldAwareEcho


class SippCallTests(KamailioCallTestCase):
    timeout = 120
    tmp_prefix = "calls-sipp-"

    def setUp(self) -> None:
        Answering.calls, Answering.hangups = [], []
        RingingOnly.calls, RingingOnly.hangups = [], []
        HoldAwareEcho.changes = []
        super().setUp()

    async def register(self, dialog_class: type[Dialog]) -> Any:
        base = random.randrange(40000, 60000, 2)  # outside the harness port range
        return await self.register_us(dialog_class, port_range=(base, base + 400))

    def assertSippOk(self, result: Any) -> None:
        self.assertTrue(
            result.ok,
            f"SIPp rc={result.returncode} ok={result.successful} failed={result.failed}\n"
            f"{result.errors[-2000:]}",
        )

    async def test_options_through_kamailio(self) -> None:
        """RFC 3261 §11: OPTIONS to our own AOR goes out, Kamailio relays it back on our flow,
        we answer 200 with Allow/Accept/Supported, and the 200 comes back to us."""
        protocol = await self.register(Answering)
        host, port = self.kamailio.address("tls")
        request = Request(
            "OPTIONS",
            f"sip:alice@{host}:{port}",
            [
                ("From", f"<sip:alice@{host}:{port}>;tag=opt1"),
                ("To", f"<sip:alice@{host}:{port}>"),
                ("Call-ID", "options-1@voiptwisted"),
                ("CSeq", "1 OPTIONS"),
            ],
        )
        response = await protocol.send_request(request)
        self.assertEqual(response.status_code, 200)
        self.assertIn("INVITE", response.headers["Allow"])
        self.assertEqual(response.headers["Accept"], "application/sdp")
        self.assertTrue(response.headers["User-Agent"].startswith("voiptwisted/"))
        await self.assertNothingLeft(protocol)

    async def test_inbound_call(self) -> None:
        """RFC 3261 §13/§15: SIPp calls alice through Kamailio; we send 100, 180, 200 with SDP;
        SIPp ACKs and BYEs through the Record-Route set; the call leaves nothing behind."""
        protocol = await self.register(Answering)
        uac = self.sipp(
            "uac_call", self.kamailio.address("udp"), service="alice", duration_ms=300,
            timeout=20,
        ).start()
        self.assertSippOk(await self.finish(uac, 30))
        self.assertEqual(len(Answering.calls), 1)
        await eventually(lambda: Answering.hangups, 15, "hangup_received")
        self.assertIn("SIP/2.0 180 Ringing", uac.messages)
        self.assertRegex(uac.messages, r"SIP/2\.0 200 OK(.*\n)*?m=audio \d+ RTP/AVP 8")
        await self.assertNothingLeft(protocol)

    async def test_hold_and_resume_reinvites(self) -> None:
        """RFC 3261 §14.2 / RFC 3264 §8.4: SIPp calls our echo UA through Kamailio, puts it
        on hold with an a=sendonly re-INVITE and resumes with a=sendrecv.  SIPp checks each
        200: a=recvonly, then a=sendrecv, the o= version one higher each time (RFC 3264 §8);
        our session hears of both changes and the call ends cleanly with BYE."""
        protocol = await self.register(HoldAwareEchoDialog)
        uac = self.sipp(
            "uac_reinvite_hold", self.kamailio.address("udp"), service="alice",
            duration_ms=300, timeout=20,
        ).start()
        self.assertSippOk(await self.finish(uac, 30))
        self.assertEqual(HoldAwareEcho.changes, ["recvonly", "sendrecv"])
        self.assertRegex(uac.messages, r"CSeq: 2 INVITE(.*\n)*?a=recvonly")
        await self.assertNothingLeft(protocol)

    async def test_cancel_before_answer(self) -> None:
        """RFC 3261 §9.2: SIPp CANCELs while we ring: 200 to the CANCEL, 487 to the INVITE."""
        protocol = await self.register(RingingOnly)
        uac = self.sipp(
            "uac_cancel", self.kamailio.address("udp"), service="alice", duration_ms=300,
            timeout=20,
        ).start()
        self.assertSippOk(await self.finish(uac, 30))
        self.assertIn("SIP/2.0 487", uac.messages)
        self.assertEqual(len(RingingOnly.calls), 1)
        await eventually(lambda: RingingOnly.hangups, 15, "hangup_received")
        await self.assertNothingLeft(protocol)

    async def test_outbound_call(self) -> None:
        """RFC 3261 §13.2: we dial bob (a SIPp UAS registered over UDP) through Kamailio;
        200 -> ACK to the Contact through the route set; our BYE ends it."""
        protocol = await self.register(Answering)
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
        answered = await dialog.dial(f"sip:bob@{host}:{port}", session_class=Session)
        self.assertIs(answered, dialog)
        self.assertTrue(dialog.route_set)  # Kamailio record-routes
        self.assertIsNotNone(dialog.session)
        await sleep(0.2)
        await dialog.bye()
        self.assertSippOk(await self.finish(uas, 15))
        await self.assertNothingLeft(protocol)

    async def test_hundred_sequential_calls(self) -> None:
        """Issue 3: 100 sequential calls through Kamailio all succeed and leave no dialog,
        transaction or timer behind."""
        protocol = await self.register(Answering)
        uac = self.sipp(
            "uac_call",
            self.kamailio.address("udp"),
            service="alice",
            calls=100,
            rate=20,
            duration_ms=10,
            extra_args=("-l", "1"),
            timeout=60,
        ).start()
        result = await self.finish(uac, 90)
        self.assertSippOk(result)
        self.assertEqual(result.successful, 100)
        self.assertEqual(len(Answering.calls), 100)
        await eventually(lambda: len(Answering.hangups) == 100, 30, "100 hangups")
        await self.assertNothingLeft(protocol)
