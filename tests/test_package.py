"""The package's public modules import without a reactor and expose the documented names."""

from __future__ import annotations

import os
import subprocess
import sys

from twisted.trial import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def modules_loaded_by(code: str) -> set[str]:
    """The names in ``sys.modules`` after *code* runs in a fresh interpreter.

    Same interpreter and package as the tests: ``sys.executable`` with this
    checkout first on ``PYTHONPATH``.
    """
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=path), cwd=ROOT,
        timeout=60,
        check=True,
    )  # fmt: skip
    return set(out.stdout.split())


class ImportTests(unittest.SynchronousTestCase):
    def test_status_names(self) -> None:
        """``voiptwisted.sip`` re-exports SIPStatus and SIPMethod with the reference's phrases."""
        from voiptwisted.sip import SIPMethod, SIPStatus

        self.assertEqual(SIPStatus.BUSY_HERE.phrase, "Busy Here")
        self.assertEqual(SIPStatus.phrase_for(499), "Bad Request")
        self.assertEqual(SIPMethod.INVITE, "INVITE")

    def test_unknown_name(self) -> None:
        """An unknown attribute of ``voiptwisted.sip`` raises AttributeError, not ImportError."""
        import voiptwisted.sip

        with self.assertRaises(AttributeError):
            voiptwisted.sip.NoSuchThing  # noqa: B018

    def test_interfaces(self) -> None:
        from voiptwisted.interfaces import IDialog, ISession

        self.assertIn("answer", IDialog.names())
        self.assertIn("audio_received", ISession.names())


class LightImportTests(unittest.SynchronousTestCase):
    """Issue 9 item 3: the syntax layers load neither numpy nor a reactor."""

    def test_sip_sdp_rtp_packet_load_no_numpy_or_reactor(self) -> None:
        """``import voiptwisted.sip``, ``.sdp`` and ``.rtp.packet``: no numpy, no reactor."""
        loaded = modules_loaded_by(
            "import voiptwisted.sip, voiptwisted.sdp, voiptwisted.rtp.packet"
        )
        self.assertIn("voiptwisted.rtp.packet", loaded)
        self.assertNotIn("numpy", loaded)
        self.assertNotIn("twisted.internet.reactor", loaded)

    def test_sdp_codecs_registry_and_rtp_packet_load_no_twisted(self) -> None:
        """DESIGN.md: ``sdp/`` (offer/answer included) imports no codec, numpy or Twisted;
        the codec registry and ``rtp.packet`` neither; the STUN client stays unloaded."""
        loaded = modules_loaded_by(
            "import voiptwisted.sdp.negotiation, voiptwisted.codecs, voiptwisted.rtp.packet"
        )
        self.assertIn("voiptwisted.sdp.negotiation", loaded)
        unwanted = ("twisted", "numpy", "pylibsrtp", "voiptwisted.media", "voiptwisted.rtp.srtp",
                    "voiptwisted.rtp.stun", "voiptwisted.codecs.g711")
        self.assertEqual(sorted(m for m in loaded if m.startswith(unwanted)), [])

    def test_lazy_rtp_names_resolve(self) -> None:
        """``voiptwisted.rtp`` serves its names on first use (PEP 562)."""
        import voiptwisted.rtp
        from voiptwisted.rtp import packet, stun

        self.assertIs(voiptwisted.rtp.RTPPacket, packet.RTPPacket)
        self.assertIs(voiptwisted.rtp.StunClient, stun.StunClient)
        self.assertIn("RealtimeTransportProtocol", dir(voiptwisted.rtp))
        with self.assertRaises(AttributeError):
            voiptwisted.rtp.NoSuchThing  # noqa: B018
