"""A codec change by re-INVITE mid-call keeps the echo (issue 12; RFC 3264 §8.3.2).

baresip 1.0 cannot be the peer here: its ``reinvite`` command (menu module,
``call_modify``) re-sends an offer built from the account's codec list, which a call cannot
change (1.0 has no command to set a call's or an account's audio codecs, and no
``medialdir``), so its re-INVITE offers what its INVITE offered and the answer keeps the
codec.  SIPp sends the re-INVITEs instead: it calls our echo through Kamailio (TCP, then TLS
to us) offering one codec, and after a few seconds re-INVITEs offering another.  SIPp
cannot stream G.722 or Opus, so its SDP points at an RTP endpoint of this test's own
(:class:`Phone`), which encodes speech with the codec SIPp offered last, and decodes what
our echo sends back by payload type.

Checked: the session's rate follows the codec (``media_changed`` sees 16 kHz after the
change to G.722, 48 kHz after the change to Opus); after the change our echo sends the new
payload type, and what it sends decodes to the speech the phone sent in that codec
(cross-correlated piece by piece); SIPp's checks see the new codec in the 200's SDP.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np
from twisted.internet import reactor, task
from twisted.internet.protocol import DatagramProtocol

from tests.integration.peers import SippResult, echo_peaks, make_speech_wav
from tests.integration.support import EchoDialog, KamailioCallTestCase, eventually
from voiptwisted.codecs.registry import lookup
from voiptwisted.media.session import EchoSession
from voiptwisted.media.wav import load_mono

PORT_RANGE = (37600, 37800)
#: Seconds SIPp keeps the first codec, then the second, before its BYE.
FIRST_MS, SECOND_MS = 3000, 5000
#: (SDP rtpmap/fmtp lines, payload type) SIPp offers per codec.
OFFERS = {
    "PCMA": (["a=rtpmap:8 PCMA/8000"], 8),
    "G722": (["a=rtpmap:9 G722/8000"], 9),
    "opus": (["a=rtpmap:111 opus/48000/2", "a=fmtp:111 useinbandfec=1;stereo=0"], 111),
}

_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="codec_reinvite">
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
      Content-Type: application/sdp
      Content-Length: [len]

{first}
    ]]>
  </send>
  <recv response="100" optional="true" response_txn="invite"/>
  <recv response="180" optional="true" response_txn="invite"/>
  <recv response="183" optional="true" response_txn="invite"/>
  <recv response="200" rrs="true" response_txn="invite">
    <action>
      <ereg regexp="{first_map}" search_in="body" check_it="true" assign_to="codec"/>
    </action>
  </recv>
{ack1}
  <pause milliseconds="{first_ms}"/>
  <send retrans="500" start_txn="reinvite">
    <![CDATA[

      INVITE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

{second}
    ]]>
  </send>
  <recv response="100" optional="true" response_txn="reinvite"/>
  <recv response="200" response_txn="reinvite">
    <action>
      <ereg regexp="{second_map}" search_in="body" check_it="true" assign_to="codec"/>
    </action>
  </recv>
{ack2}
  <pause milliseconds="{second_ms}"/>
{bye}
  <recv response="200" crlf="true"/>
</scenario>
"""

_IN_DIALOG = """  <send{attributes}>
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


def _sdp(codec: str, version: int, port: int) -> str:
    """SIPp's offer: one audio stream of *codec* to the test's phone at *port*."""
    lines, pt = OFFERS[codec]
    sdp = [
        "v=0", f"o=sipp 53655765 {version} IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1",
        "t=0 0", f"m=audio {port} RTP/AVP {pt}", *lines, "a=ptime:20", "a=sendrecv",
    ]
    return "".join(f"      {line}\n" for line in sdp)


def write_scenario(directory: str, first: str, second: str, port: int) -> str:
    path = os.path.join(directory, "codec_reinvite.xml")
    with open(path, "w") as handle:
        handle.write(_SCENARIO.format(
            first=_sdp(first, 1, port), second=_sdp(second, 2, port),
            first_map=OFFERS[first][0][0], second_map=OFFERS[second][0][0],
            first_ms=FIRST_MS, second_ms=SECOND_MS,
            ack1=_IN_DIALOG.format(attributes=' ack_txn="invite"', method="ACK", cseq=1),
            ack2=_IN_DIALOG.format(attributes=' ack_txn="reinvite"', method="ACK", cseq=2),
            bye=_IN_DIALOG.format(attributes=' retrans="500"', method="BYE", cseq=3),
        ))  # fmt: skip
    return path


class Phone(DatagramProtocol):
    """The media end of SIPp's calls: sends speech every 20 ms in the codec it is told
    (:meth:`use`), keeps by payload type what comes back, decoded."""

    def __init__(self, speech: str) -> None:
        self.speech = speech
        self.remote: tuple[str, int] | None = None
        self.codecs: dict[int, Any] = {}
        self.decoders: dict[int, Any] = {}
        #: Payload type -> (samples sent, decoded samples received), each a list of frames.
        self.sent: dict[int, list[np.ndarray]] = {}
        self.heard: dict[int, list[np.ndarray]] = {}
        self.seq = 0
        self.timestamp = 0
        self.loop = task.LoopingCall(self.tick)
        self.loop.clock = reactor

    def use(self, name: str) -> None:
        """Send *name* from now on (the codec SIPp's last offer carried)."""
        (codec,) = lookup([name])
        pt = OFFERS[name][1]
        self.codecs[pt] = codec
        self.decoders.setdefault(pt, codec.decoder())
        self.pt, self.codec, self.encoder = pt, codec, codec.encoder()
        self.audio = load_mono(self.speech, codec.sample_rate)
        self.position = 0

    def tick(self) -> None:
        if self.remote is None:
            return
        n = self.codec.frame_samples
        if self.position + n > len(self.audio):
            self.position = 0
        frame = self.audio[self.position : self.position + n]
        self.position += n
        self.sent.setdefault(self.pt, []).append(frame)
        header = struct.pack("!BBHII", 0x80, self.pt, self.seq & 0xFFFF,
                             self.timestamp & 0xFFFFFFFF, 0x1234ABCD)
        self.seq += 1
        self.timestamp += self.codec.timestamp_step
        self.transport.write(header + self.encoder.encode(frame), self.remote)

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        if len(data) < 12:
            return
        pt = data[1] & 0x7F
        decoder = self.decoders.get(pt)
        if decoder is None:
            return
        header = 12 + 4 * (data[0] & 0x0F)
        self.heard.setdefault(pt, []).append(np.asarray(decoder.decode(data[header:])))

    def samples(self, table: dict[int, list[np.ndarray]], pt: int) -> np.ndarray:
        frames = table.get(pt, [])
        return np.concatenate(frames).astype(np.int16) if frames else np.zeros(0, np.int16)


class RateEcho(EchoSession):
    """An echo that tells the test each rate a ``media_changed`` left it at."""

    rates: list[int] = []
    changed: Any = None

    def media_changed(self, direction: str) -> None:
        type(self).rates.append(self.sample_rate)
        if type(self).changed is not None:
            type(self).changed(self)


class RateEchoDialog(EchoDialog):
    session_class = RateEcho
    dialogs: list[Any] = []

    def call_received(self) -> None:
        type(self).dialogs.append(self)
        super().call_received()


class CodecReinviteTests(KamailioCallTestCase):
    timeout = 90
    tmp_prefix = "codec-reinvite-"

    def setUp(self) -> None:
        super().setUp()
        RateEcho.rates = []
        RateEcho.changed = None
        RateEchoDialog.dialogs = []

    async def change(self, first: str, second: str) -> None:
        """SIPp calls our echo with *first*, re-INVITEs with *second*: the echo goes on."""
        await self.register_us(RateEchoDialog, port_range=PORT_RANGE, srtp="off")
        tmp = self.tmpdir()
        phone = Phone(str(make_speech_wav(
            os.path.join(tmp, "speech.wav"),
            "one two three four five, the codec changes and the echo goes on", rate=48000)))
        port = reactor.listenUDP(0, phone, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        phone.use(first)
        phone.loop.start(0.02)
        self.addCleanup(lambda: phone.loop.running and phone.loop.stop())
        RateEcho.changed = lambda session: phone.use(second)
        sipp = self.sipp(
            write_scenario(tmp, first, second, port.getHost().port),
            self.kamailio.address("tcp"), transport="t1", service="alice",
            timeout=(FIRST_MS + SECOND_MS) / 1000 + 30, tmpdir=tmp,
        ).start()
        (dialog,) = await eventually(lambda: RateEchoDialog.dialogs, 15, "the call")
        await eventually(lambda: dialog.media is not None, 10, "the call's media")
        phone.remote = ("127.0.0.1", dialog.media.local_port)
        result: SippResult = await self.finish(sipp, (FIRST_MS + SECOND_MS) / 1000 + 40)
        self.assertEqual((result.returncode, result.successful, result.failed), (0, 1, 0),
                         result.errors[-2000:] or result.log[-2000:])
        (old, new) = (lookup([name])[0] for name in (first, second))
        self.assertEqual(RateEcho.rates, [new.sample_rate])
        for name, codec in ((first, old), (second, new)):
            pt = OFFERS[name][1]
            sent, heard = phone.samples(phone.sent, pt), phone.samples(phone.heard, pt)
            peaks = echo_peaks(sent, heard, piece=codec.sample_rate // 2)
            figures = (f"{name} echo: {len(heard)} samples back of {len(sent)} sent, peaks "
                       f"of the voiced pieces {[round(p, 3) for p in peaks]}")
            self.assertGreaterEqual(len(peaks), 3, figures)
            self.assertGreater(float(np.median(peaks)), 0.7, figures)

    async def test_pcma_to_g722_keeps_the_echo(self) -> None:
        """RFC 3264 §8.3.2: a re-INVITE from PCMA to G.722 (RFC 3551 §4.5.2) changes the
        codec of the call: the session is at 16 kHz after it and the echo comes back in
        G.722."""
        await self.change("PCMA", "G722")

    async def test_g722_to_opus_keeps_the_echo(self) -> None:
        """RFC 3264 §8.3.2: a re-INVITE from G.722 to Opus (RFC 7587) changes the codec of
        the call: the session is at 48 kHz after it and the echo comes back in Opus."""
        await self.change("G722", "opus")
