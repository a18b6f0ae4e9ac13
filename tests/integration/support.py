"""What the media and SIPp integration tests share (loopback only).

- :class:`KamailioCallTestCase`: a Kamailio of its own per test (started and stopped by
  PID through ``tests.integration.peers``), temporary directories removed afterwards, our
  UA registered over TLS with ``voiptwisted.sip.connect.run`` (:meth:`register_us`), SIPp
  run in the background and polled without blocking the reactor that answers the calls.
- :func:`eventually` / :func:`sleep`: bounded polling on the running reactor.
- :class:`EchoDialog`, :func:`recording_dialog`: dialogs that answer every call;
  :func:`recording` reads what the recording session wrote.
- :func:`uac_scenario`: a SIPp UAC scenario (INVITE with our SDP, ACK, actions, BYE).
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

from tests.integration.apps import PatientEcho
from tests.integration.peers import Kamailio, Sipp, SippResult, read_wav
from voiptwisted.media.call import MediaConfig
from voiptwisted.media.session import RecordingSession
from voiptwisted.sip.connect import run
from voiptwisted.sip.dialog import Dialog
from voiptwisted.sip.uri import SipURI

#: Polling interval of :func:`eventually`, in seconds.
POLL = 0.05


async def sleep(seconds: float) -> None:
    """Wait *seconds* while the reactor keeps running."""
    await task.deferLater(reactor, seconds, lambda: None)


async def eventually(predicate: Any, timeout: float, what: str) -> Any:
    """Poll ``predicate`` without blocking the reactor; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / POLL) + 2):
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            break
        await sleep(POLL)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class EchoDialog(Dialog):
    """Answers every call with ``session_class`` (a :class:`PatientEcho` unless
    overridden: the tests that use it correlate what the peer hears, and the plain
    echo cuts what a loaded reactor hands it in bursts)."""

    session_class: type = PatientEcho

    def call_received(self) -> None:
        self.answer(session_class=self.session_class)


class RecordingDialog(Dialog):
    """Answers every call with a RecordingSession writing into ``directory``."""

    directory = ""

    def call_received(self) -> None:
        self.answer(session_class=RecordingSession, directory=self.directory)


def recording_dialog(directory: str) -> type[RecordingDialog]:
    """A RecordingDialog class whose calls are recorded into *directory*."""
    return type("Recorder", (RecordingDialog,), {"directory": directory})


async def recording(directory: str, timeout: float = 10) -> tuple[list[dict[str, Any]], Any]:
    """Wait for the one call recorded into *directory*; return its DTMF events (the JSON)
    and its WAV samples."""

    def written() -> list[str]:
        return glob.glob(os.path.join(directory, "*.json"))

    await eventually(written, timeout, "recording JSON")
    (json_path,) = written()
    with open(json_path) as handle:
        events = json.load(handle)
    return events, read_wav(json_path[: -len(".json")] + ".wav")


class KamailioCallTestCase(TestCase):
    """A test with its own Kamailio (``self.kamailio``); helpers to register and run SIPp."""

    tmp_prefix = "integration-"
    #: Kamailio's users and passwords (None: its default alice and bob).
    kamailio_users: dict[str, str] | None = None
    #: More ``Kamailio`` keyword arguments (``crlf_ping=False``, ``challenge_bye=True`` ...).
    kamailio_options: dict[str, Any] = {}

    def tmpdir(self) -> str:
        """A fresh directory, removed when the test ends."""
        path = tempfile.mkdtemp(prefix=self.tmp_prefix)
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def setUp(self) -> None:
        self.kamailio = Kamailio(
            self.tmpdir(), users=self.kamailio_users, **self.kamailio_options
        )
        self.addCleanup(self.kamailio.cleanup)
        self.kamailio.start()

    async def register_us(
        self, dialog_class: type = Dialog, *, port_range: tuple[int, int], srtp: str = "off",
        timeout: float = 20, codecs: tuple[str, ...] | None = None, **options: Any,
    ) -> Any:
        """Register ``alice`` over TLS (RFC 5626 flow) and return the connected protocol.

        Calls to alice reach *dialog_class*; media uses *port_range*, *srtp* policy and
        *codecs* (default: ``MediaConfig``'s); *options* go to ``run`` (``keepalive=`` ...).
        The service is stopped when the test ends.
        """
        host, port = self.kamailio.address("tls")
        protocol = await run(
            SipURI.parse(f"sip:alice@{host}:{port}"),
            password=self.kamailio.users["alice"],
            ca_file=self.kamailio.ca_cert,
            reactor=reactor,
            dialog_class=dialog_class,
            media_config=MediaConfig(
                port_range=port_range, srtp=srtp, reactor=reactor,
                **({"codecs": codecs} if codecs else {}),
            ),
            **options,
        ).addTimeout(timeout, reactor)
        self.addCleanup(protocol.service.stopService)
        self.assertTrue(protocol.is_secure)
        return protocol

    def sipp(self, scenario: str, remote: tuple[str, int] | None = None, **kwargs: Any) -> Sipp:
        """A SIPp agent (not started) that is stopped when the test ends."""
        agent = Sipp(scenario, remote, **kwargs)
        self.addCleanup(agent.cleanup)
        return agent

    async def finish(self, agent: Sipp, timeout: float) -> SippResult:
        """Wait for a background SIPp to exit while the reactor keeps running."""
        await eventually(lambda: not agent.running, timeout, f"{agent} to finish")
        return agent.collect()

    async def assertNothingLeft(self, protocol: Any) -> None:
        """Issue 3: no dialog, transaction or timer of ours survives the calls."""
        await eventually(
            lambda: (
                (protocol.dialog_count, protocol.transaction_count, protocol.pending_timer_count)
                == (0, 0, 0)
            ),
            30,
            "calls to be forgotten",
        )


#: A request inside the dialog SIPp established (ACK or BYE), routed by its Record-Route set.
_IN_DIALOG = """  <send{retrans}>
    <![CDATA[

      {method} [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: {cseq} {method}
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>
"""


_UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="{name}">
  <send retrans="500" start_txn="invite">
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
{media}
    ]]>
  </send>

  <recv response="100" optional="true" response_txn="invite"/>
  <recv response="180" optional="true" response_txn="invite"/>
  <recv response="183" optional="true" response_txn="invite"/>
  <recv response="200" rrs="true" rtd="true" response_txn="invite"/>

{ack}
{actions}
{bye}
  <recv response="200" crlf="true"/>
</scenario>
"""


def exec_action(attributes: str, pause_ms: int | None = None) -> str:
    """One SIPp ``<exec .../>`` action (e.g. ``play_pcap_audio="..."``), then a pause."""
    text = f"  <nop>\n    <action>\n      <exec {attributes}/>\n    </action>\n  </nop>\n\n"
    if pause_ms is not None:
        text += f'  <pause milliseconds="{pause_ms}"/>\n\n'
    return text


def uac_scenario(directory: str, name: str, media: list[str], actions: str) -> str:
    """Write a UAC scenario to *directory* and return its path.

    It INVITEs ``[service]`` with an SDP whose media section is the lines *media*
    (``m=``/``a=`` lines, SIPp keywords allowed), ACKs the 200 (through its Record-Route
    set), runs *actions* (see :func:`exec_action`), then sends BYE and expects 200.  The
    INVITE is a SIPp transaction, so a 1xx that arrives after its 200 (a proxy's UDP
    workers can swap them) is ignored instead of failing the call.
    """
    sdp_media = "".join(f"      {line}\n" for line in media)
    path = os.path.join(directory, f"{name}.xml")
    with open(path, "w") as handle:
        handle.write(_UAC.format(
            name=name, media=sdp_media, actions=actions,
            ack=_IN_DIALOG.format(retrans=' ack_txn="invite"', method="ACK", cseq=1),
            bye=_IN_DIALOG.format(retrans=' retrans="500"', method="BYE", cseq=2),
        ))  # fmt: skip
    return path
