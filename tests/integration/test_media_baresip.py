"""Call media against real peers (baresip, SIPp) through Kamailio over TLS (loopback only).

baresip calls our AOR and hears its own speech echoed; we call baresip and play
a WAV it records; both proven by cross-correlation, also with SDES-SRTP
(``;mediaenc=srtp-mand``).  SIPp plays an RFC 2833 DTMF capture and the
recording session writes exactly that digit.  Kamailio and baresip are started and stopped by
these tests, by PID, through ``tests.integration.peers``.  baresip's helpers
block, so they run in a thread while the reactor handles our SIP and RTP.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from twisted.internet import threads

from tests.integration import peers
from tests.integration.peers import Baresip, echo_peaks, make_speech_wav, read_wav
from tests.integration.support import (
    EchoDialog,
    KamailioCallTestCase,
    recording,
    recording_dialog,
)
from voiptwisted.media.session import PlaybackSession
from voiptwisted.media.wav import load_mono, write_wav
from voiptwisted.sip.dialog import Dialog

#: Media ports of these tests.
PORT_RANGE = (36000, 36400)


class BaresipMediaTests(KamailioCallTestCase):
    timeout = 120
    tmp_prefix = "media-baresip-"

    def setUp(self) -> None:
        super().setUp()
        self.speech = make_speech_wav(
            os.path.join(self.tmpdir(), "speech.wav"), "one two three, the echo test is running"
        )

    async def baresip(self, user: str, srtp: bool, **params: str) -> Baresip:
        ua = Baresip(
            self.tmpdir(),
            account=self.kamailio.baresip_account(user, **params),
            audio_source_wav=self.speech,
            srtp=srtp,
        )
        self.addCleanup(ua.cleanup)
        await threads.deferToThread(ua.start)
        await threads.deferToThread(ua.wait_registered)
        return ua

    async def received_audio(self, ua: Baresip, seconds: float) -> None:
        minimum = 44 + 2 * int(8000 * seconds)

        def enough() -> bool:
            files = ua.received_recordings()
            return bool(files) and os.path.getsize(files[0]) > minimum

        await threads.deferToThread(peers.wait_until, enough, 20, 0.1, "baresip recording")

    async def assert_heard(self, ua: Baresip, reference: Any, srtp: bool, what: str) -> None:
        """Stop *ua*; every voiced half second of *reference* must be in its recording of the
        call (median correlation peak > 0.8: pieces, as a packet dropped or a silence
        inserted under load shifts the rest of the call and defeats one long template), and
        with *srtp* its log must say SRTP was on (RFC 4568 SDES)."""
        log = ua.log
        await threads.deferToThread(ua.stop)
        peaks = echo_peaks(reference, read_wav(ua.received_recordings()[0]))
        figures = f"{what}: peaks of the voiced pieces {[round(p, 3) for p in peaks]}"
        self.assertGreaterEqual(len(peaks), 4, figures)
        self.assertGreater(float(np.median(peaks)), 0.8, figures)
        if srtp:
            self.assertRegex(log, r"SRTP is Enabled")

    async def echo_call(self, srtp: bool) -> None:
        await self.register_us(
            EchoDialog, port_range=PORT_RANGE, srtp="required" if srtp else "optional"
        )
        ua = await self.baresip("bob", srtp)
        result = await threads.deferToThread(ua.dial, self.kamailio.uri("alice"))
        self.assertTrue(result["ok"])
        await threads.deferToThread(ua.wait_for_event, "CALL_ESTABLISHED", 15)
        await self.received_audio(ua, 4.0)
        await threads.deferToThread(ua.hangup)
        await threads.deferToThread(ua.wait_for_event, "CALL_CLOSED", 10)
        await self.assert_heard(ua, read_wav(self.speech), srtp, "echo")

    async def test_baresip_hears_its_echo(self) -> None:
        """Issue 4: baresip calls us through Kamailio and hears its own speech (correlated)."""
        await self.echo_call(srtp=False)

    async def test_baresip_hears_its_echo_srtp(self) -> None:
        """Issue 5 / RFC 4568: the same with srtp-mand; baresip's log says SRTP is enabled."""
        await self.echo_call(srtp=True)

    async def play_to_baresip(self, srtp: bool) -> None:
        protocol = await self.register_us(
            port_range=PORT_RANGE, srtp="required" if srtp else "optional"
        )
        ua = await self.baresip("bob", srtp, answermode="auto")
        # A 16 kHz stereo copy exercises the resampling path of PlaybackSession.
        speech = load_mono(self.speech, 8000)
        wide = np.repeat(speech, 2)
        path = os.path.join(self.tmpdir(), "wide.wav")
        write_wav(path, np.stack([wide, wide], axis=1), 16000)
        dialog = Dialog(sip=protocol)
        await dialog.dial(self.kamailio.uri("bob"), session_class=PlaybackSession, path=path)
        established = await threads.deferToThread(ua.wait_for_event, "CALL_ESTABLISHED", 15)
        # With policy optional a non-SRTP baresip first refuses our RTP/SAVP offer (a closed
        # call of its own), so wait for the close of the established call only.
        start = ua.events.index(established)
        await threads.deferToThread(ua.wait_for_event, "CALL_CLOSED", 30, start)
        await self.assert_heard(ua, speech, srtp, "playback")

    async def test_we_play_to_baresip(self) -> None:
        """Issue 4: we dial baresip and play a WAV; its recording correlates with the WAV."""
        await self.play_to_baresip(srtp=False)

    async def test_we_play_to_baresip_srtp(self) -> None:
        """Issue 5: our RTP/SAVP offer to a srtp-mand baresip; audio proven by correlation."""
        await self.play_to_baresip(srtp=True)

    async def test_sipp_dtmf_recorded(self) -> None:
        """RFC 4733: SIPp's dtmf_2833_1.pcap reaches the recording session as exactly '1'."""
        directory = self.tmpdir()
        await self.register_us(recording_dialog(directory), port_range=PORT_RANGE, srtp="optional")
        sipp = self.sipp(
            "uac_dtmf",
            self.kamailio.address("tcp"),
            transport="t1",
            service="alice",
            duration_ms=800,
            timeout=20,
            tmpdir=self.tmpdir(),
        )
        result = await threads.deferToThread(sipp.run)
        self.assertTrue(result.ok, result.errors or result.log[-2000:])
        digits, samples = await recording(directory)
        self.assertEqual([d["digit"] for d in digits], ["1"])
        self.assertGreater(len(samples), 0)
