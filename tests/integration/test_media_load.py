"""50 concurrent SIPp calls with RTP for 10 s through Kamailio; < 0.1 % packets lost (issue 4).

Our UA registers over TLS with ``voiptwisted.sip.connect.run`` and answers every call
with an :class:`~voiptwisted.media.session.EchoSession`.  One SIPp process places 50
calls through Kamailio (TCP towards Kamailio, TLS from Kamailio to us); each call streams
10 s of PCMA (``rtp_stream``, 20 ms packets) from its own RTP port, which also receives our
echo.  Loss is measured on our side per call from RTP sequence numbers (RFC 3550 §A.3:
expected = extended highest sequence - first sequence + 1; lost = expected - received).
Afterwards no dialog, transaction, timer or RTP port of ours may remain.
SIPp runs in the background and is polled without blocking the reactor.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np
from twisted.internet import reactor, task
from twisted.trial.unittest import TestCase

from tests.integration.peers import Kamailio, Sipp, SippResult
from voiptwisted.media.call import MediaConfig
from voiptwisted.media.g711 import alaw_encode
from voiptwisted.media.session import EchoSession
from voiptwisted.sip.connect import run
from voiptwisted.sip.dialog import Dialog
from voiptwisted.sip.uri import SipURI

CALLS = 50
SECONDS = 10
#: The media port range of this test only, so leaks are attributable to it.
PORT_RANGE = (17000, 17400)

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac_rtp_stream">
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
      m=audio [rtpstream_audio_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
      a=ptime:20

    ]]>
  </send>

  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>

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

  <nop>
    <action>
      <exec rtp_stream="STREAM_FILE,-1,8"/>
    </action>
  </nop>

  <pause milliseconds="STREAM_MS"/>

  <nop>
    <action>
      <exec rtp_stream="pause"/>
    </action>
  </nop>

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


def bound_udp_ports(low: int, high: int) -> list[int]:
    """Local UDP ports in [low, high] held by sockets of this process (/proc/net/udp*)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as handle:
                lines = handle.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if low <= port <= high:
                    found.append(port)
    return sorted(found)


class MeasuredEcho(EchoSession):
    """EchoSession that keeps each call's final RTP statistics (taken when media stops)."""

    finished: list[Any] = []
    started = 0

    def start(self) -> None:
        type(self).started += 1

    def stop(self) -> None:
        stats = self.stats
        if stats is not None:
            type(self).finished.append(stats)


class EchoDialog(Dialog):
    def call_received(self) -> None:
        self.answer(session_class=MeasuredEcho)


class MediaLoadTests(TestCase):
    timeout = 90

    def tmpdir(self) -> str:
        path = tempfile.mkdtemp(prefix="media-load-")
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def setUp(self) -> None:
        self.kamailio = Kamailio(self.tmpdir())
        self.addCleanup(self.kamailio.cleanup)
        self.kamailio.start()
        MeasuredEcho.finished = []
        MeasuredEcho.started = 0

    def stream_file(self) -> str:
        """One second of a 440 Hz tone as raw PCMA (what SIPp's rtp_stream loops)."""
        t = np.arange(8000) / 8000.0
        tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        path = os.path.join(self.tmpdir(), "tone.alaw")
        with open(path, "wb") as handle:
            handle.write(bytes(alaw_encode(tone)))
        return path

    async def test_fifty_concurrent_echo_calls(self) -> None:
        """Issue 4: 50 concurrent calls x 10 s of RTP, < 0.1 % lost, nothing left behind."""
        self.assertEqual(bound_udp_ports(*PORT_RANGE), [], "port range busy before the test")
        host, port = self.kamailio.address("tls")
        protocol = await run(
            SipURI.parse(f"sip:alice@{host}:{port}"),
            password=self.kamailio.users["alice"],
            ca_file=self.kamailio.ca_cert,
            reactor=reactor,
            dialog_class=EchoDialog,
            media_config=MediaConfig(port_range=PORT_RANGE, srtp="off"),
        ).addTimeout(20, reactor)
        self.addCleanup(protocol.service.stopService)
        tmp = self.tmpdir()
        scenario = os.path.join(tmp, "uac_rtp_stream.xml")
        with open(scenario, "w") as handle:
            handle.write(
                SCENARIO.replace("STREAM_FILE", self.stream_file()).replace(
                    "STREAM_MS", str(SECONDS * 1000)
                )
            )
        sipp = Sipp(
            scenario,
            self.kamailio.address("tcp"),
            transport="t1",
            service="alice",
            calls=CALLS,
            rate=CALLS,
            extra_args=["-l", str(CALLS), "-rp", "1000"],
            timeout=SECONDS + 30,
            tmpdir=tmp,
        )
        self.addCleanup(sipp.cleanup)
        sipp.start()
        await eventually(lambda: not sipp.running, SECONDS + 35, "SIPp to finish")
        result: SippResult = sipp.collect()
        self.assertEqual(
            (result.returncode, result.successful, result.failed), (0, CALLS, 0),
            result.errors[-2000:] or result.log[-2000:],
        )
        await eventually(lambda: len(MeasuredEcho.finished) == CALLS, 10, "all media stopped")
        self.assertEqual(MeasuredEcho.started, CALLS)

        received = sum(s.packets_received for s in MeasuredEcho.finished)
        lost = sum(max(s.lost, 0) for s in MeasuredEcho.finished)
        expected = received + lost
        sent = sum(s.packets_sent for s in MeasuredEcho.finished)
        # 50 calls x 10 s x 50 packets/s; allow for SIPp's start-up and the BYE race.
        self.assertGreater(expected, 0.9 * CALLS * SECONDS * 50)
        self.assertLess(lost / expected, 0.001, f"lost {lost} of {expected} packets")
        # The echo went back: every call sent about as much as it received.
        self.assertGreater(sent, 0.95 * received, f"echoed {sent} of {received} packets")
        for stats in MeasuredEcho.finished:
            self.assertGreater(stats.packets_received, 0.9 * SECONDS * 50, stats)

        await eventually(
            lambda: (
                (protocol.dialog_count, protocol.transaction_count, protocol.pending_timer_count)
                == (0, 0, 0)
            ),
            10,
            "calls to be forgotten",
        )
        await eventually(lambda: bound_udp_ports(*PORT_RANGE) == [], 5, "RTP ports released")
