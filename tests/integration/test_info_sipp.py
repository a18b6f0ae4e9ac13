"""SIPp sends DTMF as SIP INFO (and UPDATEs) through Kamailio; the recording has the keys.

PBXs that relay keys in the signalling (Cisco, some Asterisk and FreeSWITCH
configurations) send one ``INFO`` with ``application/dtmf-relay`` (``Signal=5``,
``Duration=160``) per key.  Our UA registers over TLS and answers with a
:class:`~voiptwisted.media.session.RecordingSession`; SIPp calls it through Kamailio
(``sipp/uac_info_dtmf.xml``), sends six such INFOs, an INFO naming an Info Package (469,
RFC 6086 §4.2.2), an UPDATE without a body and an UPDATE offering hold (RFC 3311 §5.2),
then BYE.  The JSON written beside the WAV must hold exactly the six keys, in order.
"""

from __future__ import annotations

from tests.integration.support import KamailioCallTestCase, recording, recording_dialog

#: The keys uac_info_dtmf.xml sends, in order.
KEYS = ["1", "5", "#", "*", "0", "9"]


class SippInfoDTMFTests(KamailioCallTestCase):
    timeout = 90
    tmp_prefix = "info-sipp-"

    async def test_info_digits_recorded_in_order(self) -> None:
        """RFC 6086 §2 (legacy INFO usage) and §4.2.2, RFC 3311 §5.2: six dtmf-relay INFOs
        through Kamailio are recorded as exactly those six keys, in order; the Info-Package
        INFO gets 469 and both UPDATEs 200 (the scenario fails on any other answer), and
        the 200 to the INVITE lists INFO and UPDATE in Allow (RFC 3261 §20.5)."""
        directory = self.tmpdir()
        await self.register_us(recording_dialog(directory), port_range=(17500, 17600))
        sipp = self.sipp(
            "uac_info_dtmf",
            self.kamailio.address("tcp"),
            transport="t1",
            service="alice",
            timeout=30,
            tmpdir=self.tmpdir(),
        )
        sipp.start()
        result = await self.finish(sipp, 40)
        self.assertTrue(result.ok, result.errors[-2000:] or result.log[-2000:])
        digits, _samples = await recording(directory)
        self.assertEqual([d["digit"] for d in digits], KEYS)
        times = [d["time"] for d in digits]
        self.assertEqual(times, sorted(times))
