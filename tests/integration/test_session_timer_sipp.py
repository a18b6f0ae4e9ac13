"""Session timers (RFC 4028) against SIPp through Kamailio, both refresher roles.

Our UA registers over TLS; five SIPp agents run at once, so the whole proof costs about one
session interval (90 s asked for, the RFC's floor: refreshes at 45 s, the expiry BYE at
60 s):

- ``uac_timer_refresh_update`` / ``uac_timer_refresh_reinvite``: SIPp calls us asking for
  90 s with ``refresher=uas``; we refresh at half the interval, by UPDATE when SIPp's Allow
  lists it, else by re-INVITE with our SDP unchanged (same ``o=`` line, RFC 3264 §8).
- ``uac_timer_update_405``: as ``uac_timer_refresh_update``, but SIPp answers our UPDATE
  405 although its Allow listed it; we refresh by re-INVITE at once (RFC 4028 §9).
- ``uac_timer_peer_refreshes``: SIPp calls us as the refresher (``refresher=uac``),
  refreshes once by UPDATE and once by re-INVITE, then stops; we hang up with BYE when the
  session expires unrefreshed (§10).
- ``uas_timer_422``: we call SIPp (registered as bob) asking for 90 s
  (``session_expires``), it answers 422 with ``Min-SE: 120``; we retry asking for 120 s
  (§7.4), SIPp makes us the refresher
  (``refresher=uac``) and we refresh by UPDATE at 60 s.

Each scenario checks the Session-Expires of every message it receives and fails on any
other flow; the test waits on SIPp's exit and log, never on the clock.
"""

from __future__ import annotations

import random
import re
from typing import Any

from tests.integration.support import EchoDialog, KamailioCallTestCase, eventually
from voiptwisted.media.session import Session
from voiptwisted.sip.dialog import Dialog


def our_origins(messages: str) -> list[str]:
    """The ``o=`` lines of the SDP we sent, in order, from SIPp's message log (SIPp's own
    say ``o=sipp``)."""
    lines = re.findall(r"^o=.*$", messages, re.M)
    return [line for line in lines if not line.startswith("o=sipp")]


class SippSessionTimerTests(KamailioCallTestCase):
    timeout = 180
    tmp_prefix = "timer-sipp-"

    def assertSippOk(self, agent: Any, result: Any) -> None:
        self.assertTrue(
            result.ok,
            f"{agent}: rc={result.returncode} ok={result.successful} failed={result.failed}\n"
            f"{result.errors[-2000:]}\n{agent.messages[-3000:]}",
        )

    async def test_session_timers_both_roles(self) -> None:
        """RFC 4028 §9/§10 (we refresh at half the interval by UPDATE, and by same-SDP
        re-INVITE without UPDATE in Allow, and by re-INVITE after a 405 to our UPDATE),
        §9/§10 (the peer refreshes by UPDATE and
        re-INVITE, each restarting the timer; unrefreshed, we send BYE), §7.4 (422 with
        Min-SE: 120 to our INVITE: retried once asking for 120 s, then we refresh as
        refresher=uac), all through Kamailio."""
        base = random.randrange(40000, 60000, 2)
        protocol = await self.register_us(EchoDialog, port_range=(base, base + 400))
        # We ask for the RFC's floor too, so SIPp's 422 (Min-SE: 120) asks for more.
        protocol.media_config.session_expires = 90
        udp = self.kamailio.address("udp")

        def caller(scenario: str) -> Any:
            return self.sipp(scenario, udp, service="alice", timeout=150, tmpdir=self.tmpdir())

        callers = [
            caller("uac_timer_refresh_update"),
            caller("uac_timer_refresh_reinvite"),
            caller("uac_timer_peer_refreshes"),
            caller("uac_timer_update_405"),
        ]
        callee = self.sipp("uas_timer_422", service="bob", timeout=150, tmpdir=self.tmpdir())
        callee.start()
        register = self.sipp(
            "register", udp, service="bob", auth=("bob", self.kamailio.users["bob"]),
            keys={"contact_host": "127.0.0.1", "contact_port": callee.local_port,
                  "expires": 300},
            timeout=10,
        ).start()
        self.assertSippOk(register, await self.finish(register, 15))
        for agent in callers:
            agent.start()

        host, port = self.kamailio.address("tls")
        dialog = Dialog(sip=protocol)
        await dialog.dial(f"sip:bob@{host}:{port}", session_class=Session)
        self.assertEqual(dialog.session_timer.interval, 120)
        self.assertTrue(dialog.session_timer.we_refresh)
        # SIPp answered our refresh UPDATE (it checked its Session-Expires): hang up.
        await eventually(lambda: "X-Refresh:" in callee.messages, 100, "our refresh UPDATE")
        await dialog.bye()
        self.assertSippOk(callee, await self.finish(callee, 20))

        for agent in callers:
            self.assertSippOk(agent, await self.finish(agent, 120))
        reinvite = callers[1].messages
        origins = our_origins(reinvite)
        self.assertEqual(len(origins), 2, reinvite[-3000:])  # our 200, our re-INVITE
        self.assertEqual(origins[0], origins[1])
        fallback = our_origins(callers[3].messages)
        self.assertEqual(len(fallback), 2, callers[3].messages[-3000:])  # 200, re-INVITE
        self.assertEqual(fallback[0], fallback[1])
        await self.assertNothingLeft(protocol)
