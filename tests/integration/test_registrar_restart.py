"""A call survives a registrar crash: target refresh on the new flow (issue 17 item 1).

Kamailio over TLS is our registrar and proxy; SIPp (UDP to Kamailio) calls us through it.
Mid-call the test kills Kamailio with SIGKILL (by the PID it started, whole process group)
and starts it again on the same ports: its location table and transactions are gone and
our TLS flow is dead.  Our client reconnects, registers again (RFC 5626 §4.2.1) and sends
the call a re-INVITE with the new Contact (RFC 3261 §12.2); Kamailio's
``set_contact_alias`` on that in-dialog INVITE makes the Contact point at the new
connection.  SIPp answers it, then sends its BYE to that Contact: it must reach us and get
our 200 (before the refresh it got 477 from Kamailio: the alias named the dead connection).
"""

from __future__ import annotations

import random
import re
from typing import Any

from tests.integration.support import KamailioCallTestCase, eventually
from tests.integration.test_calls_sipp import Answering
from voiptwisted.sip.dialog import DialogState


class RegistrarRestartTests(KamailioCallTestCase):
    timeout = 180
    tmp_prefix = "registrar-restart-"

    def setUp(self) -> None:
        Answering.calls, Answering.hangups = [], []
        super().setUp()

    async def test_bye_after_registrar_killed_mid_call(self) -> None:
        """RFC 5626 §4.2.1 / RFC 3261 §12.2: registrar killed and restarted mid-call; we
        re-register on a new flow, refresh the call's target with a re-INVITE that keeps
        the media (same SDP), and the far end's BYE through the restarted proxy gets 200."""
        await self.crash_mid_call("uac_target_refresh", "INVITE")

    async def test_update_refresh_after_registrar_killed(self) -> None:
        """RFC 3311 §5.1: the far end allows UPDATE, so the target refresh is an UPDATE
        without SDP; its BYE through the restarted proxy then gets our 200."""
        await self.crash_mid_call("uac_target_refresh_update", "UPDATE")

    async def crash_mid_call(self, scenario: str, method: str) -> None:
        """Call us from SIPp, kill and restart Kamailio, check the refresh and the BYE."""
        base = random.randrange(40000, 60000, 2)
        protocol = await self.register_us(Answering, port_range=(base, base + 400))
        registration = protocol.service.registration
        uac = self.sipp(
            scenario, self.kamailio.address("udp"), service="alice", timeout=120,
        ).start()
        await eventually(
            # the session starts with the ACK (RFC 3261 §13.3.1.4)
            lambda: Answering.calls and Answering.calls[0].session is not None,
            20, "the call to be answered and ACKed",
        )
        [dialog] = Answering.calls
        sdp_before = dialog.media.local_sdp
        old_port = protocol.local_address.port

        self.kamailio.kill()
        await eventually(lambda: not protocol.is_connected, 10, "our flow to drop")
        self.kamailio.start()

        def registered_again() -> Any:
            new = registration.protocol
            return registration.registered and new is not None and new is not protocol and new

        flow = await eventually(registered_again, 60, "registration on a new flow")
        self.assertIs(dialog.sip, flow)
        new_port = flow.local_address.port
        self.assertNotEqual(new_port, old_port)

        result = await self.finish(uac, 100)
        self.assertTrue(
            result.ok,
            f"SIPp rc={result.returncode} ok={result.successful} failed={result.failed}\n"
            f"{result.errors[-2000:]}\n{uac.messages[-4000:]}",
        )
        messages = uac.messages
        # The refresh reached SIPp with our new Contact (Kamailio's alias names the new
        # connection), a re-INVITE with our SDP unchanged, and SIPp's BYE was answered.
        refresh = re.search(rf"{method} sip:sipp@.*?\n(?:.*\n)*?\s*Contact: (.*)", messages)
        self.assertIsNotNone(refresh, messages[-4000:])
        assert refresh is not None
        self.assertIn(f":{new_port}", refresh.group(1))
        if method == "INVITE":
            origin_line = sdp_before.decode().split("\r\n")[1]  # o=: same version
            self.assertIn(origin_line, messages[refresh.start():])
        await eventually(lambda: dialog.state is DialogState.TERMINATED, 10, "our side to end")
        self.assertEqual(Answering.hangups, [dialog])
        [binding] = self.kamailio.bindings("alice")
        self.assertIn(str(new_port), binding.received or binding.contact)
        await self.assertNothingLeft(flow)
