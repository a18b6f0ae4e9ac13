"""Hold and resume by a real phone: baresip re-INVITEs our echo call (RFC 3261 §14, RFC 3264 §8).

baresip (account bob) calls our AOR through Kamailio over TLS and hears its speech echoed;
then its ``hold`` command sends a re-INVITE with ``a=sendonly`` and ``resume`` one with
``a=sendrecv``.  Each 200 we send is read back from baresip's SIP trace (``-s``): the hold
gets ``a=recvonly`` and our session's ``media_changed`` hears of it; while on hold we send no
RTP.  After the resume the audio bob sends comes back again, proven by cross-correlation.
The SRTP variant (``;mediaenc=srtp-mand``, SDES) runs the SRTP contexts through both
re-INVITEs.

What bob hears before the hold is its ``sndfile`` dump (``dump-*-dec.wav``).  baresip 1.0
cannot record what a call hears after a hold: taking the call off ``sendrecv`` resets its
decoder and flushes its receive filter chain, which is never rebuilt (the send chain is still
there), so that dump ends at the hold.  After the hold, bob's player is therefore an
``aubridge`` device that a second call (account carol, also to our echo) uses as its
microphone; carol's ``sndfile`` send dump (``dump-*-enc.wav``) is what bob heard.  The
bridge is connected after the hold because baresip rebuilds bob's player at the hold, which
disconnects both ends of the bridge.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from twisted.internet import threads

from tests.integration import peers
from tests.integration.peers import Baresip, echo_peaks, make_speech_wav, read_wav
from tests.integration.support import EchoDialog, KamailioCallTestCase, eventually
from voiptwisted.media.session import EchoSession

#: Media ports of these tests (test_media_baresip.py uses 36000-36400).
PORT_RANGE = (36400, 36800)
#: Samples per second of the G.711 audio baresip records.
RATE = 8000
#: Size of the WAV header libsndfile writes before the samples (16-bit PCM).
WAV_HEADER = 44
#: Seconds of audio each correlation uses, before the hold and after the resume.
LISTEN = 4.0
#: Seconds trimmed from each end of what bob sent, so that its echo (delayed by the network,
#: our 60 ms echo buffer and baresip's jitter buffer) lies inside what bob heard.
MARGIN = 0.5
#: The aubridge device that carries what bob's call plays into carol's call.
BRIDGE = "bob-hears"
#: About 25 s of speech without repeats: every window of it is unique, so a match found
#: after the resume can only be the echo of audio sent after the resume.
SPEECH = (
    "Tonight the harbour lights came on one by one, and the fishing boats returned before "
    "the storm. Seven sailors carried baskets of silver herring up the narrow stairs. A small "
    "dog barked at the gulls while the baker counted loaves for the morning market. Far away "
    "a train whistled twice, the church clock struck nine, and rain began to fall on the "
    "copper roofs of the old town, drumming softly until midnight."
)
#: RFC 3264 §6.1: the direction an answer gives to each offered direction.
ANSWER_TO = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


class HoldWitness(EchoSession):
    """An echo that keeps itself in ``sessions`` and the directions re-INVITEs gave it."""

    sessions: ClassVar[list[HoldWitness]] = []

    def __init__(self, dialog: Any, **kwargs: Any) -> None:
        super().__init__(dialog, **kwargs)
        self.changes: list[str] = []
        type(self).sessions.append(self)

    def media_changed(self, direction: str) -> None:
        self.changes.append(direction)


class HoldWitnessDialog(EchoDialog):
    """Answers every call with a :class:`HoldWitness` echo."""

    session_class = HoldWitness


def samples_written(path: Path) -> int:
    """How many 16-bit samples baresip's sndfile has written to *path* so far."""
    return max(0, (os.path.getsize(path) - WAV_HEADER) // 2)


def invite_sdp(log: str, call_id: str) -> tuple[list[str], list[str]]:
    """The SDP bodies of the INVITEs of dialog *call_id* in baresip's SIP trace (``-s``) and
    of the 200s answering them, each in CSeq order, a retransmitted 200 counted once."""
    offers: dict[int, str] = {}
    answers: dict[int, str] = {}
    for message in log.split("\x1b[36;1m#")[1:]:
        text = message.split("\x1b[;m")[0]
        if not re.search(rf"(?im)^Call-ID:\s*{re.escape(call_id)}\s*$", text):
            continue
        cseq = re.search(r"(?im)^CSeq:\s*(\d+)\s+INVITE\s*$", text)
        if cseq is None or "\nv=0" not in text:
            continue
        body = text[text.index("\nv=0") + 1 :]
        if re.search(r"(?m)^INVITE ", text):
            offers[int(cseq.group(1))] = body
        elif re.search(r"(?m)^SIP/2\.0 200 ", text):
            answers[int(cseq.group(1))] = body
    return [offers[k] for k in sorted(offers)], [answers[k] for k in sorted(answers)]


def direction(sdp: str) -> str:
    """The audio stream's direction attribute (RFC 3264 §5.1; none means sendrecv)."""
    found = re.findall(r"(?m)^a=(sendrecv|sendonly|recvonly|inactive)\s*$", sdp)
    return found[-1] if found else "sendrecv"


def keys(sdp: str) -> tuple[str, ...]:
    """The SDES ``a=crypto`` keys of *sdp* (RFC 4568 §9.1)."""
    return tuple(re.findall(r"(?m)^a=crypto:\S+ \S+ inline:(\S+)", sdp))


def dumps(ua: Baresip, kind: str) -> list[Path]:
    """baresip's sndfile dumps of *kind* ("enc": sent, "dec": heard), one per call, in the
    order the calls started (their names carry the start time)."""
    return sorted(ua.record_dir.glob(f"dump-*-{kind}.wav"))


def origin_version(sdp: str) -> int:
    """The session version of the ``o=`` line (RFC 4566 §5.2)."""
    match = re.search(r"(?m)^o=\S+ \S+ (\d+) ", sdp)
    assert match is not None, sdp
    return int(match.group(1))


class BaresipHoldTests(KamailioCallTestCase):
    timeout = 120
    tmp_prefix = "hold-baresip-"
    kamailio_users = {"alice": "secret", "bob": "secret", "carol": "secret"}

    def setUp(self) -> None:
        HoldWitness.sessions = []
        super().setUp()
        self.speech = make_speech_wav(os.path.join(self.tmpdir(), "speech.wav"), SPEECH)

    async def command(self, ua: Baresip, command: str, params: str = "") -> None:
        """One baresip command (ctrl_tcp), which must succeed."""
        result = await threads.deferToThread(ua.command, command, params)
        self.assertTrue(result.get("ok"), f"baresip {command} {params}: {result}")

    async def select(self, ua: Baresip, user: str) -> None:
        """Make baresip's account *user* the one its next command acts on (``uafind``)."""
        host, port = self.kamailio.address("tls")
        await self.command(ua, "uafind", f"sip:{user}@{host}:{port}")

    async def dial(self, ua: Baresip, user: str) -> None:
        """Call our AOR from baresip's account *user*; return once it is established."""
        start = len(ua.events)
        await self.select(ua, user)
        await self.command(ua, "dial", self.kamailio.uri("alice"))
        await threads.deferToThread(ua.wait_for_event, "CALL_ESTABLISHED", 15, start)

    async def grown(self, path: Path, seconds: float, since: int) -> None:
        """Wait until baresip's dump *path* holds *seconds* of audio more than *since*."""

        def enough() -> bool:
            return samples_written(path) >= since + int(seconds * RATE)

        await threads.deferToThread(peers.wait_until, enough, 20, 0.1, f"audio in {path.name}")

    async def call_hold_resume(self, srtp: bool) -> None:
        """bob calls, holds, resumes (see the module docstring); with *srtp* over SDES-SRTP."""
        await self.register_us(
            HoldWitnessDialog, port_range=PORT_RANGE, srtp="required" if srtp else "optional"
        )
        ua = Baresip(
            self.tmpdir(),
            account=self.kamailio.baresip_account("bob", audio_player=f"aubridge,{BRIDGE}"),
            extra_accounts=(
                self.kamailio.baresip_account(
                    "carol", audio_source=f"aubridge,{BRIDGE}", audio_player="alsa,null"
                ),
            ),
            extra_modules=("aubridge.so",),
            audio_source_wav=self.speech,
            srtp=srtp,
            sip_trace=True,
        )
        self.addCleanup(ua.cleanup)
        await threads.deferToThread(ua.start)
        for user in ("bob", "carol"):
            await threads.deferToThread(
                ua.wait_for, rf"{user}@\S+: \S+ 200 OK\b.*\[\d+ bindings?\]", 10
            )

        # bob calls our echo; its own sndfile dumps show the echo before the hold.
        await self.dial(ua, "bob")
        (session,) = await eventually(lambda: HoldWitness.sessions, 10, "our session")
        (bob_sent,) = dumps(ua, "enc")
        (bob_heard,) = dumps(ua, "dec")
        await self.grown(bob_heard, LISTEN, 0)
        srtp_context = session.dialog.media.rtp.srtp
        refused = (session.stats.auth_failures, session.stats.replays)
        hold_sent, hold_heard = samples_written(bob_sent), samples_written(bob_heard)

        # Hold: a=sendonly from bob; we answer a=recvonly, tell the session, send nothing.
        await self.command(ua, "hold")
        await eventually(lambda: session.changes, 10, "media_changed after the hold")
        sent_on_hold = session.stats.packets_sent

        # carol calls our echo too, with what bob's call plays as its microphone.
        await self.dial(ua, "carol")
        self.assertEqual(session.stats.packets_sent, sent_on_hold, "we sent RTP while on hold")

        # Resume: a=sendrecv both ways, and bob hears its echo again (carol's send dump).
        await self.select(ua, "bob")
        await self.command(ua, "resume")
        await eventually(lambda: len(session.changes) > 1, 10, "media_changed after the resume")
        (_, heard_via_carol) = dumps(ua, "enc")
        resume_sent, resume_heard = samples_written(bob_sent), samples_written(heard_via_carol)
        await self.grown(heard_via_carol, LISTEN + MARGIN, resume_heard)
        self.assertGreater(session.stats.packets_sent, sent_on_hold)
        self.assertEqual(session.dialog.media.secure, srtp)
        # baresip keeps its SDES key in both re-INVITEs, so we keep ours (RFC 4568 §7.1.4):
        # each SRTP context carries on (SRTPContext.rekeyed returns it) and no packet fails
        # authentication or replay checks across the re-INVITEs.
        self.assertIs(session.dialog.media.rtp.srtp, srtp_context)
        self.assertEqual((session.stats.auth_failures, session.stats.replays), refused)

        log = ua.log
        closed = len(ua.events)
        for user in ("carol", "bob"):
            await self.select(ua, user)
            await self.command(ua, "hangup")
        await threads.deferToThread(
            peers.wait_until,
            lambda: sum(e.get("type") == "CALL_CLOSED" for e in ua.events[closed:]) == 2,
            10,
            0.05,
            "both calls closed",
        )
        await threads.deferToThread(ua.stop)

        offers, answers = invite_sdp(log, session.dialog.call_id)
        self.assertEqual([direction(sdp) for sdp in offers], ["sendrecv", "sendonly", "sendrecv"])
        self.assertEqual(
            [direction(sdp) for sdp in answers], [ANSWER_TO[direction(sdp)] for sdp in offers]
        )
        self.assertEqual(session.changes, [direction(sdp) for sdp in answers[1:]])
        first = origin_version(answers[0])
        self.assertEqual([origin_version(sdp) for sdp in answers], [first, first + 1, first + 2])

        margin, listen = int(MARGIN * RATE), int(LISTEN * RATE)
        sent = read_wav(bob_sent)
        for what, peaks in (
            (
                "before the hold",
                echo_peaks(sent[margin : hold_sent - margin], read_wav(bob_heard)[:hold_heard]),
            ),
            (
                "after the resume",
                echo_peaks(
                    sent[resume_sent + margin : resume_sent + listen - margin],
                    read_wav(heard_via_carol)[resume_heard:],
                ),
            ),
        ):
            figures = f"echo {what}: peaks of the voiced pieces {[round(p, 3) for p in peaks]}"
            self.assertGreaterEqual(len(peaks), 4, figures)
            self.assertGreater(float(np.median(peaks)), 0.8, figures)
        if srtp:
            self.assertRegex(log, r"SRTP is Enabled")
            self.assertEqual(len({keys(sdp) for sdp in offers}), 1, offers)
            self.assertEqual(len({keys(sdp) for sdp in answers}), 1, answers)

    async def test_hold_resume(self) -> None:
        """baresip holds (a=sendonly, our 200 a=recvonly) and resumes; the echo survives."""
        await self.call_hold_resume(srtp=False)

    async def test_hold_resume_srtp(self) -> None:
        """The same with SDES-SRTP (srtp-mand): audio survives both re-INVITEs."""
        await self.call_hold_resume(srtp=True)
