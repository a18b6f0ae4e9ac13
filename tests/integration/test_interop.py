"""What real carriers and PBXs do that a lab registrar does not (issue 10), against Kamailio
and SIPp on 127.0.0.1: a registrar that ignores CRLF keepalives, a challenged BYE, early
media, redirects.  Every peer is started and stopped by PID through ``tests.integration.peers``.
"""

from __future__ import annotations

import os
import random
from typing import Any

from tests.integration.peers import G711A_PCAP, g711a_pcap_samples, xcorr_peak
from tests.integration.support import KamailioCallTestCase, eventually, recording
from voiptwisted.apps import dialog_for_app
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


#: A UAS behind the proxy with early media (RFC 3960): 183 Session Progress with SDP (PCMA),
#: the capture *pcap* played as early audio, *pause_ms* later 200 with the same SDP, then
#: the ACK and the caller's BYE.  Nothing is played after the 200.
UAS_EARLY_MEDIA = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uas_early_media">
  <recv request="INVITE" crlf="true"/>

  <send>
    <![CDATA[

      SIP/2.0 183 Session Progress
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
      a=ptime:20

    ]]>
  </send>

  <nop>
    <action>
      <exec play_pcap_audio="{pcap}"/>
    </action>
  </nop>

  <pause milliseconds="{pause_ms}"/>

  <send retrans="500">
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_Record-Route:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
      a=ptime:20

    ]]>
  </send>

  <recv request="ACK" crlf="true"/>

  <recv request="BYE"/>

  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>

  <pause milliseconds="500"/>
</scenario>
"""


#: A UAS behind the proxy that redirects every INVITE (RFC 3261 §8.1.3.4, §21.3.3) to the
#: Contact given as key ``redirect_to``, then takes the proxy's ACK.
UAS_REDIRECT = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uas_redirect">
  <recv request="INVITE" crlf="true"/>

  <send>
    <![CDATA[

      SIP/2.0 302 Moved Temporarily
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <[redirect_to]>;q=0.7
      Content-Length: 0

    ]]>
  </send>

  <recv request="ACK"/>
</scenario>
"""

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


class EarlyMediaTests(InteropTestCase):
    async def register_bob(self, uas: Any) -> None:
        """Register SIPp *uas* as bob (over UDP at Kamailio) so our calls to bob reach it."""
        register = self.sipp(
            "register",
            self.kamailio.address("udp"),
            service="bob",
            auth=("bob", self.kamailio.users["bob"]),
            keys={"contact_host": "127.0.0.1", "contact_port": uas.local_port, "expires": 60},
            timeout=10,
        ).start()
        self.assertSippOk(await self.finish(register, 15))

    async def test_record_app_holds_the_early_audio(self) -> None:
        """RFC 3261 §13.2.1 / RFC 3960: we call bob, a SIPp UAS that answers 183 with SDP
        and plays a G.711 capture as early media, then 200 with the same SDP and no more
        audio.  The media runs from the 183, so the ``record:`` app's WAV holds the capture
        (cross-correlated), heard before the 200."""
        directory = self.tmpdir()
        record = dialog_for_app(f"record:{directory}")
        protocol = await self.register(record)
        pause_ms = 4000
        scenario = os.path.join(self.tmpdir(), "uas_early_media.xml")
        with open(scenario, "w") as handle:
            handle.write(UAS_EARLY_MEDIA.format(pcap=G711A_PCAP, pause_ms=pause_ms))
        uas = self.sipp(scenario, service="bob", timeout=40).start()
        await self.register_bob(uas)
        host, port = self.kamailio.address("tls")
        progress: list[int] = []
        dialog = record(sip=protocol)
        dialog.progress_received = progress.append  # type: ignore[method-assign]
        await dialog.dial(
            f"sip:bob@{host}:{port}",
            session_class=record.session_class,
            **record.session_kwargs,
        )
        self.assertIn(183, progress)
        await dialog.bye()
        self.assertSippOk(await self.finish(uas, 20))
        _digits, samples = await recording(directory)
        far = samples[:, 0] if samples.ndim == 2 else samples
        early = g711a_pcap_samples()[: 8000 * 2]
        peak, lag = xcorr_peak(early, far)
        self.assertGreater(peak, 0.9, (peak, lag))
        await self.assertNothingLeft(protocol)


class RedirectTests(InteropTestCase):
    kamailio_users = {"alice": "secret", "bob": "secret", "carol": "secret"}

    async def register_sipp(self, user: str, uas: Any) -> None:
        """Register SIPp *uas* as *user* (over UDP at Kamailio)."""
        register = self.sipp(
            "register",
            self.kamailio.address("udp"),
            service=user,
            auth=(user, self.kamailio.users[user]),
            keys={"contact_host": "127.0.0.1", "contact_port": uas.local_port, "expires": 60},
            timeout=10,
        ).start()
        self.assertSippOk(await self.finish(register, 15))

    async def test_302_reaches_the_new_target(self) -> None:
        """RFC 3261 §8.1.3.4: we call bob, a SIPp UAS that answers 302 with carol's AOR as
        Contact; we send a new INVITE to carol (another SIPp UAS, through Kamailio), she
        answers, and our BYE reaches her."""
        protocol = await self.register()
        host, port = self.kamailio.address("tls")
        scenario = os.path.join(self.tmpdir(), "uas_redirect.xml")
        with open(scenario, "w") as handle:
            handle.write(UAS_REDIRECT)
        redirector = self.sipp(
            scenario, service="bob", keys={"redirect_to": f"sip:carol@{host}:{port}"},
            timeout=30,
        ).start()
        carol = self.sipp("uas", service="carol", timeout=30).start()
        await self.register_sipp("bob", redirector)
        await self.register_sipp("carol", carol)
        dialog = Dialog(sip=protocol)
        await dialog.dial(f"sip:bob@{host}:{port}", session_class=Session)
        self.assertEqual(dialog.invite_request.uri, f"sip:carol@{host}:{port}")
        self.assertIn(f":{carol.local_port};", str(dialog.remote_contact))
        await dialog.bye()
        self.assertSippOk(await self.finish(redirector, 15))
        self.assertSippOk(await self.finish(carol, 15))
        await self.assertNothingLeft(protocol)
