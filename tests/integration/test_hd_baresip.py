"""Wideband calls against a real phone: baresip with only G.722 or only Opus (issue 12).

baresip (account bob) loads a single codec module, ``g722.so`` or ``opus.so``, calls our
echo service through Kamailio over TLS (plain RTP and SDES-SRTP) and hears itself: its
``sndfile`` recording of the call is cross-correlated with what it sent, and the
recording's rate (the decoder's) says which codec carried it.  A 6 kHz tone, which
telephone-band G.711 cannot carry (8 kHz sampling: nothing above 4 kHz), comes back
through a G.722 and an Opus echo and does not through a PCMA one: proof that the call
is wideband end to end, through our decoder, our session and our encoder.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from twisted.internet import threads

from tests.codecs.signals import band_fraction
from tests.integration import peers
from tests.integration.peers import Baresip, make_speech_wav, read_wav, wav_rate, xcorr_peak
from tests.integration.support import (
    EchoDialog,
    KamailioCallTestCase,
    recording,
    recording_dialog,
)
from voiptwisted.media.session import PlaybackSession
from voiptwisted.media.wav import load_mono
from voiptwisted.sip.dialog import Dialog

#: Media ports of these tests (test_media_baresip.py uses 36000-36400, hold 36400+).
PORT_RANGE = (37000, 37400)
#: baresip module, the rate its decoder records at and its audio channels, per codec
#: (baresip runs Opus in stereo, as ``opus/48000/2`` reads; we send mono and fold down).
CODECS = {
    "g722": ("g722.so", 16000, 1),
    "opus": ("opus.so", 48000, 2),
    "pcma": ("g711.so", 8000, 1),
}
TONE_HZ = 6000.0


class WidebandBaresipTests(KamailioCallTestCase):
    timeout = 120
    tmp_prefix = "hd-baresip-"

    async def register_echo(self, srtp: bool) -> None:
        """Our echo service as alice, with the default codecs (Opus, G.722, PCMA, PCMU)."""
        await self.register_us(
            EchoDialog, port_range=PORT_RANGE, srtp="required" if srtp else "optional"
        )

    async def echo_call(self, codec: str, srtp: bool, source: str, seconds: float) -> Any:
        """baresip with only *codec* calls our echo and sends *source*; returns what it
        recorded of the call (int16 at the codec's rate) after checking that rate."""
        module, rate, channels = CODECS[codec]
        ua = Baresip(
            self.tmpdir(),
            account=self.kamailio.baresip_account("bob"),
            audio_source_wav=source,
            srtp=srtp,
            codec_modules=(module,),
            source_rate=rate,
            source_channels=channels,
        )
        self.addCleanup(ua.cleanup)
        await threads.deferToThread(ua.start)
        await threads.deferToThread(ua.wait_registered)
        result = await threads.deferToThread(ua.dial, self.kamailio.uri("alice"))
        self.assertTrue(result["ok"])
        try:
            await threads.deferToThread(ua.wait_for_event, "CALL_ESTABLISHED", 15)
        except peers.PeerError:
            self.fail(f"{codec} call not established; baresip log:\n{ua.log[-3000:]}")
        minimum = 44 + 2 * int(rate * seconds)

        def enough() -> bool:
            files = ua.received_recordings()
            return bool(files) and os.path.getsize(files[0]) > minimum

        await threads.deferToThread(peers.wait_until, enough, 30, 0.1, "baresip recording")
        await threads.deferToThread(ua.hangup)
        await threads.deferToThread(ua.wait_for_event, "CALL_CLOSED", 10)
        log = ua.log
        await threads.deferToThread(ua.stop)
        if srtp:
            self.assertRegex(log, r"SRTP is Enabled")
        path = ua.received_recordings()[0]
        self.assertEqual(wav_rate(path), rate, f"{codec}: baresip decoded at another rate")
        return read_wav(path)

    async def hears_itself(self, codec: str, srtp: bool) -> None:
        _, rate, _ = CODECS[codec]
        speech = make_speech_wav(
            os.path.join(self.tmpdir(), "speech.wav"),
            "one two three, the wideband echo test is running", rate=rate,
        )
        await self.register_echo(srtp)
        heard = await self.echo_call(codec, srtp, str(speech), 4.0)
        # Each voiced half second found on its own: a packet late under load shifts what
        # follows it, which one long template would read as a missing echo.
        peaks = peers.echo_peaks(read_wav(speech), heard, piece=rate // 2)
        figures = f"{codec} echo: peaks of the voiced pieces {[round(p, 3) for p in peaks]}"
        self.assertGreaterEqual(len(peaks), 4, figures)
        self.assertGreater(float(np.median(peaks)), 0.7, figures)

    async def test_g722_baresip_hears_its_echo(self) -> None:
        """RFC 3551 §4.5.2: baresip with only G.722 calls our echo and hears itself."""
        await self.hears_itself("g722", srtp=False)

    async def test_g722_baresip_hears_its_echo_srtp(self) -> None:
        """The same over SDES-SRTP (RFC 4568)."""
        await self.hears_itself("g722", srtp=True)

    async def test_opus_baresip_hears_its_echo(self) -> None:
        """RFC 7587: baresip with only Opus calls our echo and hears itself."""
        await self.hears_itself("opus", srtp=False)

    async def test_opus_baresip_hears_its_echo_srtp(self) -> None:
        """The same over SDES-SRTP (RFC 4568)."""
        await self.hears_itself("opus", srtp=True)

    async def tone_back(self, codec: str) -> tuple[float, float]:
        """Send a 6 kHz tone through a *codec* echo call: (its RMS level in what baresip
        heard, the share of that audio's energy within 5.5-6.5 kHz, 0 when the rate cannot
        hold it)."""
        _, rate, _ = CODECS[codec]
        path = os.path.join(self.tmpdir(), f"tone-{codec}.wav")
        wide = max(rate, 16000)
        t = np.arange(int(wide * 3.0)) / wide
        peers.write_wav(path, (8000 * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16), wide)
        heard = await self.echo_call(codec, False, path, 3.0)
        middle = heard[len(heard) // 4 : 3 * len(heard) // 4].astype(np.float64)
        level = float(np.sqrt(np.mean(middle**2))) if middle.size else 0.0
        share = band_fraction(middle, rate, 5500, 6500) if rate > 2 * 6500 else 0.0
        return level, share

    async def test_6khz_tone_survives_g722_and_opus_not_pcma(self) -> None:
        """Issue 12: a 6 kHz tone comes back through a G.722 and an Opus echo call (most of
        the echo's energy is at 6 kHz, and it is loud), while through PCMA (8 kHz sampling,
        RFC 3551 §4.5.14) nothing of it comes back."""
        await self.register_echo(srtp=False)
        results = {}
        for codec in ("g722", "opus", "pcma"):
            results[codec] = await self.tone_back(codec)
        for codec in ("g722", "opus"):
            level, share = results[codec]
            self.assertGreater(share, 0.8, f"{codec}: {results}")
            self.assertGreater(level, 1000, f"{codec}: {results}")
        level, _ = results["pcma"]
        self.assertLess(level, results["g722"][0] / 20, results)

    async def play_to(self, codec: str) -> None:
        """We dial baresip (only *codec*) and play an 8 kHz WAV: the PlaybackSession resamples
        it to the call's rate and baresip's recording at that rate correlates with it."""
        module, rate, channels = CODECS[codec]
        protocol = await self.register_us(port_range=PORT_RANGE, srtp="off")
        ua = Baresip(
            self.tmpdir(),
            account=self.kamailio.baresip_account("bob", answermode="auto"),
            codec_modules=(module,),
            source_rate=rate,
            source_channels=channels,
        )
        self.addCleanup(ua.cleanup)
        await threads.deferToThread(ua.start)
        await threads.deferToThread(ua.wait_registered)
        speech = make_speech_wav(
            os.path.join(self.tmpdir(), "speech.wav"), "we play this to a wideband phone"
        )
        dialog = Dialog(sip=protocol)
        await dialog.dial(self.kamailio.uri("bob"), session_class=PlaybackSession, path=speech)
        self.assertEqual(dialog.media.negotiated.codec.sample_rate, rate)
        established = await threads.deferToThread(ua.wait_for_event, "CALL_ESTABLISHED", 15)
        start = ua.events.index(established)
        await threads.deferToThread(ua.wait_for_event, "CALL_CLOSED", 30, start)
        await threads.deferToThread(ua.stop)
        path = ua.received_recordings()[0]
        self.assertEqual(wav_rate(path), rate)
        reference = load_mono(speech, rate)
        peak, lag = xcorr_peak(reference, read_wav(path))
        self.assertGreater(peak, 0.7, f"{codec} playback not found (peak {peak:.2f}, lag {lag})")

    async def test_we_play_to_g722_baresip(self) -> None:
        """Our --dial with a PlaybackSession to a G.722-only baresip is heard (16 kHz)."""
        await self.play_to("g722")

    async def test_we_play_to_opus_baresip(self) -> None:
        """Our --dial with a PlaybackSession to an Opus-only baresip is heard (48 kHz)."""
        await self.play_to("opus")

    async def recorded_at(self, codec: str) -> None:
        """baresip (only *codec*) calls our RecordingSession: the WAV is written at the
        codec's audio rate and its far-end channel is baresip's speech."""
        module, rate, channels = CODECS[codec]
        directory = self.tmpdir()
        await self.register_us(recording_dialog(directory), port_range=PORT_RANGE, srtp="off")
        speech = make_speech_wav(
            os.path.join(self.tmpdir(), "speech.wav"),
            "one two three, the wideband recording test is running", rate=rate,
        )
        ua = Baresip(
            self.tmpdir(),
            account=self.kamailio.baresip_account("bob"),
            audio_source_wav=str(speech),
            codec_modules=(module,),
            source_rate=rate,
            source_channels=channels,
        )
        self.addCleanup(ua.cleanup)
        await threads.deferToThread(ua.start)
        await threads.deferToThread(ua.wait_registered)
        result = await threads.deferToThread(ua.dial, self.kamailio.uri("alice"))
        self.assertTrue(result["ok"])
        await threads.deferToThread(ua.wait_for_event, "CALL_ESTABLISHED", 15)
        # Stereo 16-bit: 4 bytes per sample period; 4 s of the call on disk.
        minimum = 44 + 4 * rate * 4

        def enough() -> bool:
            wavs = [os.path.join(directory, f) for f in os.listdir(directory)
                    if f.endswith(".wav")]
            return bool(wavs) and os.path.getsize(wavs[0]) > minimum

        await threads.deferToThread(peers.wait_until, enough, 30, 0.1, "our recording")
        await threads.deferToThread(ua.hangup)
        _, far_end = await recording(directory)
        (wav,) = [f for f in os.listdir(directory) if f.endswith(".wav")]
        self.assertEqual(wav_rate(os.path.join(directory, wav)), rate)
        peaks = peers.echo_peaks(read_wav(speech), far_end, piece=rate // 2)
        figures = f"{codec} recording: peaks of the voiced pieces {[round(p, 3) for p in peaks]}"
        self.assertGreaterEqual(len(peaks), 4, figures)
        self.assertGreater(float(np.median(peaks)), 0.7, figures)

    async def test_g722_call_recorded_at_16khz(self) -> None:
        """Issue 12: a G.722 call (RFC 3551 §4.5.2: 16 kHz audio) is recorded as a 16 kHz
        WAV holding what the phone said."""
        await self.recorded_at("g722")

    async def test_opus_call_recorded_at_48khz(self) -> None:
        """Issue 12: an Opus call (RFC 7587: 48 kHz) is recorded as a 48 kHz WAV holding
        what the phone said."""
        await self.recorded_at("opus")
