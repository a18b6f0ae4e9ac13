"""A real phone transfers our echo call to another phone (RFC 3515 blind transfer).

baresip (account bob) calls our AOR through Kamailio over TLS and is answered by our echo;
then its ``transfer`` command sends us a REFER to carol (a second account of the same
baresip, auto-answering).  We answer 202, call carol through Kamailio with the echo session
class, NOTIFY bob of the outcome and hang bob's call up.  carol's speech must come back to
her: her ``sndfile`` dumps (what she sent, what she heard) are cross-correlated, piece by
piece, as the other baresip tests do.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from twisted.internet import threads

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

    async def test_baresip_transfers_our_echo_call(self) -> None:
        """RFC 3515 §2.4: bob's REFER makes us call carol; she hears her own echo; bob's call
        with us ends; our NOTIFYs told bob 100 Trying and then 200 OK."""
        protocol = await self.register_us(EchoDialog, port_range=PORT_RANGE, srtp="optional")
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
        host, port = self.kamailio.address("tls")
        start = len(ua.events)
        await self.command(ua, "uafind", f"sip:bob@{host}:{port}")
        await self.command(ua, "dial", self.kamailio.uri("alice"))
        await threads.deferToThread(ua.wait_for_event, "CALL_ESTABLISHED", 15, start)
        [bob_call] = await eventually(
            lambda: [d for d in protocol.dialogs if d.session is not None], 10, "bob's call"
        )

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
