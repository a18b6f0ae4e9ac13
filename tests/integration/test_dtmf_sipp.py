"""SIPp plays RFC 2833 DTMF captures in one call; the recording session writes exactly them.

Our UA registers over TLS with ``voiptwisted.sip.connect.run`` and answers with a
:class:`~voiptwisted.media.session.RecordingSession`.  SIPp calls it through Kamailio and,
in one call, plays SIPp's ``dtmf_2833_*.pcap`` captures one after the other
(``play_pcap_audio``, one key press each: a marker packet, updates and the end packet
sent three times, RFC 4733 §2.5.1).  The JSON written beside the WAV must hold exactly
those digits, in that order, once each.  SIPp runs in the background and is polled
without blocking the reactor.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
import time
from typing import Any

from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from tests.integration.peers import SIPP_PCAP_DIR, Kamailio, Sipp, read_wav
from voiptwisted.media.call import MediaConfig
from voiptwisted.media.session import RecordingSession
from voiptwisted.sip.connect import run
from voiptwisted.sip.dialog import Dialog
from voiptwisted.sip.uri import SipURI

#: (capture name, digit) in the order played: the captures come from one stream, so this is
#: also their RTP sequence order.
CAPTURES = (
    ("1", "1"), ("2", "2"), ("3", "3"), ("4", "4"), ("5", "5"), ("6", "6"), ("7", "7"),
    ("8", "8"), ("9", "9"), ("star", "*"), ("pound", "#"), ("0", "0"),
)
#: Gap between two captures (each lasts about 140 ms) in ms.
GAP_MS = 300

PLAY = """  <nop>
    <action>
      <exec play_pcap_audio="{path}"/>
    </action>
  </nop>

  <pause milliseconds="{gap}"/>

"""

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac_dtmf_sequence">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      User-Agent: SIPp
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=ptime:20

    ]]>
  </send>

  <recv response="100" optional="global"/>
  <recv response="180" optional="global"/>
  <recv response="183" optional="global"/>
  <recv response="200" rrs="true" rtd="true"/>

  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>

PLAYS

  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>

  <recv response="200" crlf="true"/>

</scenario>
"""


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def eventually(predicate: Any, timeout: float, what: str) -> Any:
    """Poll ``predicate`` without blocking the reactor; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 2):
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        await sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class RecordingDialog(Dialog):
    """Answers every call with a RecordingSession writing into ``directory``."""

    directory = ""

    def call_received(self) -> None:
        self.answer(session_class=RecordingSession, directory=self.directory)


class SippDTMFTests(TestCase):
    timeout = 90

    def tmpdir(self) -> str:
        path = tempfile.mkdtemp(prefix="dtmf-sipp-")
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def setUp(self) -> None:
        self.kamailio = Kamailio(self.tmpdir())
        self.addCleanup(self.kamailio.cleanup)
        self.kamailio.start()

    def scenario(self, captures: tuple[tuple[str, str], ...]) -> str:
        plays = "".join(
            PLAY.format(path=SIPP_PCAP_DIR / f"dtmf_2833_{name}.pcap", gap=GAP_MS)
            for name, _digit in captures
        )
        path = os.path.join(self.tmpdir(), "uac_dtmf_sequence.xml")
        with open(path, "w") as handle:
            handle.write(SCENARIO.replace("PLAYS", plays))
        return path

    async def test_captured_digits_recorded_in_order_once_each(self) -> None:
        """RFC 4733 §2.5.1: twelve SIPp key-press captures in one call are recorded as exactly
        twelve digits, in the order played (end-packet repeats and the marker are one event)."""
        for name, _digit in CAPTURES:
            self.assertTrue((SIPP_PCAP_DIR / f"dtmf_2833_{name}.pcap").is_file(), name)
        directory = self.tmpdir()
        dialog_class = type("Recorder", (RecordingDialog,), {"directory": directory})
        host, port = self.kamailio.address("tls")
        protocol = await run(
            SipURI.parse(f"sip:alice@{host}:{port}"),
            password=self.kamailio.users["alice"],
            ca_file=self.kamailio.ca_cert,
            reactor=reactor,
            dialog_class=dialog_class,
            media_config=MediaConfig(port_range=(17400, 17500), srtp="off"),
        ).addTimeout(20, reactor)
        self.addCleanup(protocol.service.stopService)
        sipp = Sipp(
            self.scenario(CAPTURES),
            self.kamailio.address("tcp"),
            transport="t1",
            service="alice",
            duration_ms=500,
            timeout=30,
            tmpdir=self.tmpdir(),
        )
        self.addCleanup(sipp.cleanup)
        sipp.start()
        await eventually(lambda: not sipp.running, 40, "SIPp to finish")
        result = sipp.collect()
        self.assertTrue(result.ok, result.errors[-2000:] or result.log[-2000:])

        def written() -> list[str]:
            return glob.glob(os.path.join(directory, "*.json"))

        await eventually(written, 10, "recording JSON")
        (json_path,) = written()
        with open(json_path) as handle:
            digits = json.load(handle)
        self.assertEqual([d["digit"] for d in digits], [digit for _name, digit in CAPTURES])
        times = [d["time"] for d in digits]
        self.assertEqual(times, sorted(times))
        samples = read_wav(json_path[: -len(".json")] + ".wav")
        self.assertGreater(len(samples), 0)
