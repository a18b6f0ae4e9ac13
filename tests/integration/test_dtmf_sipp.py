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

from tests.integration.peers import SIPP_PCAP_DIR
from tests.integration.support import (
    KamailioCallTestCase,
    exec_action,
    recording,
    recording_dialog,
    uac_scenario,
)

#: (capture name, digit) in the order played: the captures come from one stream, so this is
#: also their RTP sequence order.
CAPTURES = (
    ("1", "1"), ("2", "2"), ("3", "3"), ("4", "4"), ("5", "5"), ("6", "6"), ("7", "7"),
    ("8", "8"), ("9", "9"), ("star", "*"), ("pound", "#"), ("0", "0"),
)
#: Gap between two captures (each lasts about 140 ms) in ms.
GAP_MS = 300
#: SDP media of SIPp's offer: PCMA and telephone-event.
MEDIA = [
    "m=audio [media_port] RTP/AVP 8 101",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=ptime:20",
]


class SippDTMFTests(KamailioCallTestCase):
    timeout = 90
    tmp_prefix = "dtmf-sipp-"

    def scenario(self, captures: tuple[tuple[str, str], ...]) -> str:
        plays = "".join(
            exec_action(f'play_pcap_audio="{SIPP_PCAP_DIR / f"dtmf_2833_{name}.pcap"}"', GAP_MS)
            for name, _digit in captures
        )
        return uac_scenario(self.tmpdir(), "uac_dtmf_sequence", MEDIA, plays)

    async def test_captured_digits_recorded_in_order_once_each(self) -> None:
        """RFC 4733 §2.5.1: twelve SIPp key-press captures in one call are recorded as exactly
        twelve digits, in the order played (end-packet repeats and the marker are one event)."""
        for name, _digit in CAPTURES:
            self.assertTrue((SIPP_PCAP_DIR / f"dtmf_2833_{name}.pcap").is_file(), name)
        directory = self.tmpdir()
        await self.register_us(recording_dialog(directory), port_range=(17400, 17500))
        sipp = self.sipp(
            self.scenario(CAPTURES),
            self.kamailio.address("tcp"),
            transport="t1",
            service="alice",
            duration_ms=500,
            timeout=30,
            tmpdir=self.tmpdir(),
        )
        sipp.start()
        result = await self.finish(sipp, 40)
        self.assertTrue(result.ok, result.errors[-2000:] or result.log[-2000:])
        digits, samples = await recording(directory)
        self.assertEqual([d["digit"] for d in digits], [digit for _name, digit in CAPTURES])
        times = [d["time"] for d in digits]
        self.assertEqual(times, sorted(times))
        self.assertGreater(len(samples), 0)
