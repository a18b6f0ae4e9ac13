"""Transfer with a real phone, both ways (RFC 3515 blind transfer), through Kamailio.

One baresip runs two accounts: bob calls our AOR (answered by our echo) and carol answers
any call by herself.  bob transfers us: its ``transfer`` command sends us a REFER to carol;
we answer 202, call carol through Kamailio with the echo session class, NOTIFY bob 100 then
200 and hang bob's call up; carol's speech must come back to her (her ``sndfile`` dumps,
what she sent and what she heard, cross-correlated piece by piece as the other baresip
tests do).  We transfer bob: our ``transfer()`` sends him a REFER to carol, baresip calls
her, and its NOTIFYs fire our Deferred with 200.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from twisted.internet import reactor, threads

from tests.integration import peers
from tests.integration.peers import Baresip, echo_peaks, make_speech_wav, read_wav
from tests.integration.support import EchoDialog, KamailioCallTestCase, eventually
from voiptwisted.sip.dialog import DialogState

#: Media ports of this test (the other baresip tests use 36000-36800 and 37000-37400).
PORT_RANGE = (37400, 37800)
#: Samples per second of the G.711 audio baresip records.
RATE = 8000
#: Size of the WAV header libsndfile writes before the samples (16-bit PCM).
WAV_HEADER = 44
#: Seconds of carol's call the correlation uses, and trimmed from each end of what she sent.
LISTEN = 4.0
MARGIN = 0.5
SPEECH = (
    "The lighthouse keeper climbed the spiral stairs at dusk and wound the heavy clock. "
    "Across the bay a ferry sounded its horn, and two children waved from the pier while "
    "their grandmother sold apples and honey from a wooden cart beside the harbour gate."
)


def samples_written(path: Any) -> int:
    """How many 16-bit samples baresip's sndfile has written to *path* so far."""
    return max(0, (os.path.getsize(path) - WAV_HEADER) // 2)


class BaresipTransferTests(KamailioCallTestCase):
    timeout = 120
    tmp_prefix = "transfer-baresip-"
    kamailio_users = {"alice": "secret", "bob": "secret", "carol": "secret"}

    async def command(self, ua: Baresip, command: str, params: str = "") -> None:
        """One baresip command (ctrl_tcp), which must succeed."""
        result = await threads.deferToThread(ua.command, command, params)
        self.assertTrue(result.get("ok"), f"baresip {command} {params}: {result}")

    async def start_baresip(self) -> Baresip:
        """One baresip with accounts bob (calls us) and carol (answers any call), both
        registered at our Kamailio."""
        speech = make_speech_wav(os.path.join(self.tmpdir(), "speech.wav"), SPEECH)
        ua = Baresip(
            self.tmpdir(),
            account=self.kamailio.baresip_account("bob"),
            extra_accounts=(
                self.kamailio.baresip_account("carol", answermode="auto"),
            ),
            audio_source_wav=speech,
            sip_trace=True,
        )
        self.addCleanup(ua.cleanup)
        await threads.deferToThread(ua.start)
        for user in ("bob", "carol"):
            await threads.deferToThread(
                ua.wait_for, rf"{user}@\S+: \S+ 200 OK\b.*\[\d+ bindings?\]", 10
            )
        return ua

    async def bob_calls_us(self, ua: Baresip, protocol: Any) -> Any:
        """bob calls our AOR; returns our dialog once its media runs."""
        host, port = self.kamailio.address("tls")
        start = len(ua.events)
        await self.command(ua, "uafind", f"sip:bob@{host}:{port}")
        await self.command(ua, "dial", self.kamailio.uri("alice"))
        await threads.deferToThread(ua.wait_for_event, "CALL_ESTABLISHED", 15, start)
        [call] = await eventually(
            lambda: [d for d in protocol.dialogs if d.session is not None], 10, "bob's call"
        )
        return call

    async def test_we_transfer_baresip(self) -> None:
        """RFC 3515 §2.4.3, §2.4.5: our ``transfer()`` sends bob a REFER to carol; baresip
        accepts it (202), calls carol, and its NOTIFYs fire our Deferred with 200."""
        protocol = await self.register_us(EchoDialog, port_range=PORT_RANGE, srtp="optional")
        ua = await self.start_baresip()
        call = await self.bob_calls_us(ua, protocol)
        start = len(ua.events)
        status = await call.transfer(self.kamailio.uri("carol")).addTimeout(30, reactor)
        self.assertEqual(status, 200)
        await threads.deferToThread(ua.wait_for_event, "CALL_ESTABLISHED", 15, start)
        await call.bye()
        await threads.deferToThread(ua.stop)
        await self.assertNothingLeft(protocol)

    async def test_baresip_transfers_our_echo_call(self) -> None:
        """RFC 3515 §2.4: bob's REFER makes us call carol; she hears her own echo; bob's call
        with us ends; our NOTIFYs told bob 100 Trying and then 200 OK."""
        protocol = await self.register_us(EchoDialog, port_range=PORT_RANGE, srtp="optional")
        ua = await self.start_baresip()
        bob_call = await self.bob_calls_us(ua, protocol)
        host, port = self.kamailio.address("tls")
        # sndfile names its dumps after the second a call's audio starts: bob's call runs
        # a second and a half first, so carol's dumps are new files, and bob hears the echo.
        [bob_heard] = await eventually(
            lambda: sorted(ua.record_dir.glob("dump-*-dec.wav")), 10, "bob's recording"
        )
        await threads.deferToThread(
            peers.wait_until, lambda: samples_written(bob_heard) >= int(1.5 * RATE),
            20, 0.1, "bob's call running",
        )
        await self.command(ua, "transfer", f"sip:carol@{host}:{port}")

        def carol_call() -> Any:
            return [
                d for d in protocol.dialogs
                if not d.inbound and d.state is DialogState.CONFIRMED and d.session is not None
            ]

        [carol] = await eventually(carol_call, 20, "our call to carol")
        await eventually(lambda: bob_call.state is DialogState.TERMINATED, 15, "bob's call ended")
        self.assertIn("carol", str(carol.remote_party))

        def carol_dumps() -> Any:
            heard = sorted(ua.record_dir.glob("dump-*-dec.wav"))
            sent = sorted(ua.record_dir.glob("dump-*-enc.wav"))
            return (sent[-1], heard[-1]) if len(heard) >= 2 and len(sent) >= 2 else None

        carol_sent, carol_heard = await eventually(carol_dumps, 10, "carol's recordings")
        await threads.deferToThread(
            peers.wait_until,
            lambda: samples_written(carol_heard) >= int((LISTEN + 2 * MARGIN) * RATE),
            20, 0.1, "carol hearing the echo",
        )
        log = ua.log
        await carol.bye()
        await threads.deferToThread(ua.stop)
        await self.assertNothingLeft(protocol)

        self.assertRegex(log, r"(?s)NOTIFY .*SIP/2\.0 100 Trying.*NOTIFY .*SIP/2\.0 200 OK")
        margin, listen = int(MARGIN * RATE), int(LISTEN * RATE)
        sent = read_wav(carol_sent)
        peaks = echo_peaks(sent[margin : listen - margin], read_wav(carol_heard))
        figures = f"carol's echo: peaks of the voiced pieces {[round(p, 3) for p in peaks]}"
        self.assertGreaterEqual(len(peaks), 4, figures)
        self.assertGreater(float(np.median(peaks)), 0.8, figures)
