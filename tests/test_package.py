"""The package's public modules import without a reactor and expose the documented names."""

from twisted.trial import unittest


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
