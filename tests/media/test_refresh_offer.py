"""``CallMedia.refresh_offer``: the re-INVITE of a target refresh changes no media (issue 17).

RFC 5626 §4.2.1 / RFC 3261 §12.2: after the signalling flow is replaced the dialog sends a
re-INVITE only to give the peer its new Contact; RFC 3264 §8: an unchanged description
keeps its ``o=`` version, and the SRTP contexts must carry on (RFC 4568 §7.1.4).
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.media.test_call import UDPClock
from tests.media.test_reinvite_media import origin
from voiptwisted.media.call import CallMedia, MediaConfig
from voiptwisted.media.pacer import Pacer


class RefreshOfferTests(SynchronousTestCase):
    """Alice offered, Bob answered; Bob (the callee) refreshes the target."""

    srtp = "off"

    def setUp(self) -> None:
        self.clock = UDPClock()
        self.config = MediaConfig(reactor=self.clock, pacer=Pacer(self.clock), srtp=self.srtp)
        self.alice = CallMedia.create_offer(self.config, "127.0.0.1")
        self.bob = CallMedia.answer_offer(self.config, self.alice.local_sdp, "127.0.0.1")
        self.alice.accept_answer(self.bob.local_sdp)
        self.addCleanup(self.alice.stop)
        self.addCleanup(self.bob.stop)

    def test_offer_is_current_sdp_same_version(self) -> None:
        """RFC 3264 §8: the refresh offers our description unchanged, same ``o=`` version."""
        before = self.bob.local_sdp
        offer = self.bob.refresh_offer()
        self.assertEqual(offer, before)
        self.assertEqual(origin(offer), origin(before))

    def test_answer_changes_nothing(self) -> None:
        """The peer answers the unchanged offer: the negotiated stream and the RTP
        destination Bob latched to stay as they were."""
        negotiated, remote = self.bob.negotiated, self.bob.rtp.remote
        context = self.bob.rtp.srtp
        answer = self.alice.reanswer(self.bob.refresh_offer())
        self.bob.accept_answer(answer)
        self.assertEqual(self.bob.negotiated, negotiated)
        self.assertEqual(self.bob.rtp.remote, remote)
        self.assertIs(self.bob.rtp.srtp, context)

    def test_needs_established_call(self) -> None:
        self.bob.stop()
        with self.assertRaises(RuntimeError):
            self.bob.refresh_offer()


class SRTPRefreshOfferTests(RefreshOfferTests):
    """The same with SDES-SRTP: both keys and both contexts carry on (RFC 4568 §7.1.4)."""

    srtp = "required"
