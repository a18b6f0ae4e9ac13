"""Tests for voiptwisted.media.call: CallMedia as the dialogs use it, over real loopback UDP."""

from __future__ import annotations

import base64
import os

import numpy as np
from twisted.internet import reactor, task
from twisted.internet.protocol import DatagramProtocol
from twisted.trial import unittest

from voiptwisted.media.call import CallMedia, MediaConfig, NegotiationFailed, _bind_address
from voiptwisted.media.pacer import Pacer
from voiptwisted.media.session import EchoSession, Session
from voiptwisted.rtp.dtmf import DTMFSender
from voiptwisted.rtp.packet import RTPPacket
from voiptwisted.rtp.stun import (
    ATTR_XOR_MAPPED_ADDRESS,
    BINDING_SUCCESS,
    StunMessage,
    address_attribute,
)
from voiptwisted.sdp import SessionDescription


class FakeDialog:
    call_id = "call-test"

    def __init__(self) -> None:
        self.byes = 0

    def bye(self) -> None:
        self.byes += 1


class Collector(Session):
    def __init__(self, dialog: object, **kwargs: object) -> None:
        super().__init__(dialog, **kwargs)
        self.audio: list[np.ndarray] = []
        self.digits: list[str] = []

    def audio_received(self, samples: np.ndarray) -> None:
        self.audio.append(samples)

    def dtmf_received(self, digit: str) -> None:
        self.digits.append(digit)


class FakeUDPPort:
    def __init__(self, port: int) -> None:
        self.port = port
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))

    def stopListening(self) -> None:
        pass


class UDPClock(task.Clock):
    """A task.Clock whose listenUDP hands out in-memory ports (no sockets)."""

    def __init__(self) -> None:
        super().__init__()
        self.ports: list[FakeUDPPort] = []

    def listenUDP(self, port: int, protocol: DatagramProtocol, interface: str = "") -> FakeUDPPort:
        fake = FakeUDPPort(port)
        protocol.makeConnection(fake)
        self.ports.append(fake)
        return fake


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def wait_for(predicate, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await task.deferLater(reactor, 0.02, lambda: None)


def normalised_peak(sent: np.ndarray, got: np.ndarray) -> tuple[float, int]:
    a = sent.astype(np.float64)
    b = got.astype(np.float64)
    corr = np.correlate(b, a, "full")
    peak = int(corr.argmax())
    norm = np.sqrt((a**2).sum() * (b**2).sum())
    return float(corr[peak] / norm), peak - (len(a) - 1)


class LoopbackCallTests(unittest.TestCase):
    def config(self, **kwargs: object) -> MediaConfig:
        kwargs.setdefault("port_range", (31000, 31200))
        # These tests compare G.711's waveform sample by sample (white noise survives it).
        kwargs.setdefault("codecs", ("PCMA", "PCMU"))
        kwargs.setdefault("reactor", reactor)
        return MediaConfig(**kwargs)  # type: ignore[arg-type]

    async def echo_call(self, config: MediaConfig, host: str = "127.0.0.1") -> tuple:
        caller = CallMedia.create_offer(config, host)
        callee = CallMedia.answer_offer(config, caller.local_sdp, host)
        self.addCleanup(caller.stop)
        self.addCleanup(callee.stop)
        caller.accept_answer(callee.local_sdp)
        near = Collector(FakeDialog())
        caller.start(near)
        callee.start(EchoSession(FakeDialog()))
        signal = (np.random.default_rng(3).standard_normal(8000) * 4000).astype(np.int16)
        near.send_audio(signal)
        await wait_for(lambda: sum(len(a) for a in near.audio) >= len(signal))
        got = np.concatenate(near.audio) if near.audio else np.zeros(1, np.int16)
        return caller, callee, signal, got

    async def test_echo_correlates(self) -> None:
        """Two CallMedia over loopback with an EchoSession: the audio comes back (correlated)."""
        caller, callee, signal, got = await self.echo_call(self.config(srtp="off"))
        peak, lag = normalised_peak(signal, got)
        self.assertGreater(peak, 0.95)
        self.assertTrue(0 <= lag <= 3 * 160, lag)
        self.assertFalse(caller.secure)
        self.assertEqual(caller.stats.packets_received, callee.stats.packets_sent)

    async def test_srtp_echo_correlates(self) -> None:
        """RFC 3711 / RFC 4568: the same echo works with SDES-SRTP and nothing is in clear."""
        caller, callee, signal, got = await self.echo_call(self.config(srtp="required"))
        self.assertTrue(caller.secure and callee.secure)
        self.assertIn(b"RTP/SAVP", caller.local_sdp)
        peak, _ = normalised_peak(signal, got)
        self.assertGreater(peak, 0.95)
        self.assertEqual(caller.stats.auth_failures, 0)

    async def test_ipv6_echo(self) -> None:
        """IPv6 media (c=IN IP6 ::1) works end to end."""
        caller, _, signal, got = await self.echo_call(self.config(srtp="off"), host="::1")
        self.assertIn(b"c=IN IP6 ::1", caller.local_sdp)
        peak, _ = normalised_peak(signal, got)
        self.assertGreater(peak, 0.95)

    async def test_dtmf_end_to_end(self) -> None:
        """RFC 4733: digits sent by one side arrive once each at the other."""
        config = self.config(srtp="optional")
        caller = CallMedia.create_offer(config, "127.0.0.1")
        callee = CallMedia.answer_offer(config, caller.local_sdp, "127.0.0.1")
        self.addCleanup(caller.stop)
        self.addCleanup(callee.stop)
        caller.accept_answer(callee.local_sdp)
        sender, receiver = Session(FakeDialog()), Collector(FakeDialog())
        caller.start(sender)
        callee.start(receiver)
        sender.send_dtmf("12#")
        await wait_for(lambda: len(receiver.digits) >= 3)
        await task.deferLater(reactor, 0.1, lambda: None)
        self.assertEqual(receiver.digits, ["1", "2", "#"])


class CallMediaTests(unittest.TestCase):
    def config(self, **kwargs: object) -> MediaConfig:
        kwargs.setdefault("port_range", (32000, 32200))
        kwargs.setdefault("reactor", reactor)
        return MediaConfig(**kwargs)  # type: ignore[arg-type]

    def test_answer_sdp_and_port(self) -> None:
        """The answer's m= port is the bound RTP port; c= is the given local host."""
        offer = CallMedia.create_offer(self.config(), "127.0.0.1")
        self.addCleanup(offer.stop)
        media = CallMedia.answer_offer(self.config(), offer.local_sdp, "127.0.0.1")
        self.addCleanup(media.stop)
        answer = SessionDescription.parse(media.local_sdp)
        self.assertEqual(answer.media[0].port, media.local_port)
        self.assertEqual(answer.connection.address, "127.0.0.1")
        self.assertEqual(media.negotiated.remote, ("127.0.0.1", offer.local_port))

    def test_public_host_advertised(self) -> None:
        """Issue 4 item 3: the public address (registration / config) goes into c=."""
        media = CallMedia.create_offer(self.config(), "127.0.0.1", public_host="203.0.113.4")
        self.addCleanup(media.stop)
        self.assertIn(b"c=IN IP4 203.0.113.4", media.local_sdp)
        media = CallMedia.create_offer(self.config(public_host="203.0.113.9"), "127.0.0.1")
        self.addCleanup(media.stop)
        self.assertIn(b"c=IN IP4 203.0.113.9", media.local_sdp)

    async def test_failed_negotiation_releases_port(self) -> None:
        """RFC 3264 §6: 488 when nothing matches, and no socket is left behind."""
        await task.deferLater(reactor, 0.05, lambda: None)
        before = open_fds()
        offer = (
            b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            b"m=audio 5004 RTP/AVP 18\r\n"
        )
        for _ in range(20):
            with self.assertRaises(NegotiationFailed) as ctx:
                CallMedia.answer_offer(self.config(), offer, "127.0.0.1")
            self.assertEqual(ctx.exception.status_code, 488)
        with self.assertRaises(NegotiationFailed):
            CallMedia.answer_offer(self.config(), b"garbage", "127.0.0.1")
        await task.deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(open_fds(), before)

    def test_public_local_host_not_bound(self) -> None:
        """A public (non-local) address given as local_host is advertised, not bound."""
        self.assertEqual(_bind_address("203.0.113.77"), "0.0.0.0")
        self.assertEqual(_bind_address("2001:db8::77"), "::")
        self.assertEqual(_bind_address("127.0.0.1"), "127.0.0.1")
        media = CallMedia.create_offer(self.config(bind_host="127.0.0.1"), "203.0.113.77")
        self.addCleanup(media.stop)
        self.assertIn(b"c=IN IP4 203.0.113.77", media.local_sdp)
        self.assertEqual(media.rtp.ports[0].getHost().host, "127.0.0.1")

    def test_srtp_policy_on_create_offer(self) -> None:
        """Issue 5 item 3: required never offers RTP/AVP; optional offers SAVP, retry AVP."""
        with self.assertRaises(NegotiationFailed):
            CallMedia.create_offer(self.config(srtp="required"), "127.0.0.1", secure=False)
        media = CallMedia.create_offer(self.config(srtp="optional"), "127.0.0.1")
        self.addCleanup(media.stop)
        self.assertIn(b"RTP/SAVP", media.local_sdp)
        retry = CallMedia.create_offer(self.config(srtp="optional"), "127.0.0.1", secure=False)
        self.addCleanup(retry.stop)
        self.assertIn(b"RTP/AVP", retry.local_sdp)
        self.assertNotIn(b"crypto", retry.local_sdp)
        off = CallMedia.create_offer(self.config(srtp="off"), "127.0.0.1")
        self.addCleanup(off.stop)
        self.assertNotIn(b"SAVP", off.local_sdp)

    def test_inbound_policy_required(self) -> None:
        """Issue 5 item 3: with policy required, an RTP/AVP offer gets 488."""
        plain = CallMedia.create_offer(self.config(srtp="off"), "127.0.0.1")
        self.addCleanup(plain.stop)
        with self.assertRaises(NegotiationFailed) as ctx:
            CallMedia.answer_offer(self.config(srtp="required"), plain.local_sdp, "127.0.0.1")
        self.assertEqual(ctx.exception.status_code, 488)

    def test_per_call_policy_override(self) -> None:
        """Issue 14 finding 11: ``srtp="required"`` for one call (a sips: one) overrides a
        config that allows plain RTP, for answers and offers alike."""
        plain = CallMedia.create_offer(self.config(srtp="off"), "127.0.0.1")
        self.addCleanup(plain.stop)
        with self.assertRaises(NegotiationFailed):
            CallMedia.answer_offer(self.config(srtp="optional"), plain.local_sdp, "127.0.0.1",
                                   srtp="required")
        offer = CallMedia.create_offer(self.config(srtp="off"), "127.0.0.1", srtp="required")
        self.addCleanup(offer.stop)
        self.assertIn(b"RTP/SAVP", offer.local_sdp)
        with self.assertRaises(ValueError):
            CallMedia.create_offer(self.config(), "127.0.0.1", srtp="sometimes")

    def test_repr_and_log_hide_keys(self) -> None:
        """Issue 5 item 4: keys are not in repr."""
        media = CallMedia.create_offer(self.config(srtp="required"), "127.0.0.1")
        self.addCleanup(media.stop)
        keys = [line.split(b"inline:")[1].split(b"|")[0]
                for line in media.local_sdp.split(b"\r\n") if b"inline:" in line]
        self.assertEqual(len(keys), 2)
        text = repr(media) + repr(media.rtp) + repr(media._offered_crypto)
        for key in keys:
            self.assertNotIn(key.decode(), text)
            self.assertNotIn(base64.b64decode(key).hex(), text)

    def test_start_stop(self) -> None:
        """start() requires negotiation; stop() stops the session once and is idempotent."""
        config = self.config(srtp="off", pacer=Pacer(task.Clock()))
        offer = CallMedia.create_offer(config, "127.0.0.1")
        self.addCleanup(offer.stop)
        with self.assertRaises(RuntimeError):
            offer.start(Session(FakeDialog()))
        media = CallMedia.answer_offer(config, offer.local_sdp, "127.0.0.1")
        stopped = []
        session = Session(FakeDialog())
        session.stop = lambda: stopped.append(True)  # type: ignore[method-assign]
        media.start(session)
        self.assertIsNotNone(session.stats)
        media.stop()
        media.stop()
        self.assertEqual(stopped, [True])
        self.assertEqual(media.rtp.ports, ())

    def test_silent_stun_bounded(self) -> None:
        """Issue 4 item 8: a silent STUN server delays setup by at most 500 ms."""
        clock = UDPClock()
        config = MediaConfig(reactor=clock, pacer=Pacer(clock),
                             stun_server=("127.0.0.1", 3478))
        d = CallMedia.create_offer_deferred(config, "127.0.0.1")
        results: list[CallMedia] = []
        d.addCallback(results.append)
        clock.advance(0.49)
        self.assertEqual(results, [])
        clock.advance(0.01)
        self.assertEqual(len(results), 1)
        self.assertIn(b"c=IN IP4 127.0.0.1", results[0].local_sdp)
        requests = [data for port in clock.ports for data, addr in port.sent
                    if addr == ("127.0.0.1", 3478)]
        self.assertGreaterEqual(len(requests), 2)

    async def test_stun_mapped_address(self) -> None:
        """RFC 5389: the XOR-MAPPED-ADDRESS from a STUN server is advertised in c= and m=."""

        class Server(DatagramProtocol):
            def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
                request = StunMessage.parse(data)
                attr = address_attribute(
                    ATTR_XOR_MAPPED_ADDRESS, ("203.0.113.5", 40000), request.transaction_id
                )
                reply = StunMessage(BINDING_SUCCESS, request.transaction_id, [attr])
                self.transport.write(reply.serialize(), addr)

        server = reactor.listenUDP(0, Server(), interface="127.0.0.1")
        self.addCleanup(server.stopListening)
        config = self.config(stun_server=("127.0.0.1", server.getHost().port))
        media = await CallMedia.create_offer_deferred(config, "127.0.0.1")
        self.addCleanup(media.stop)
        self.assertIn(b"c=IN IP4 203.0.113.5", media.local_sdp)
        self.assertIn(b"m=audio 40000 ", media.local_sdp)

    async def test_answer_offer_deferred_without_stun(self) -> None:
        offer = CallMedia.create_offer(self.config(), "127.0.0.1")
        self.addCleanup(offer.stop)
        media = await CallMedia.answer_offer_deferred(self.config(), offer.local_sdp, "127.0.0.1")
        self.addCleanup(media.stop)
        self.assertIsNotNone(media.negotiated)
        with self.assertRaises(NegotiationFailed):
            await CallMedia.answer_offer_deferred(self.config(), b"x" * 70000, "127.0.0.1")


_LIGHT_START_PROBE = """
import sys
import twisted.internet.reactor
import voiptwisted.apps, voiptwisted.media, voiptwisted.media.call, voiptwisted.tap
from voiptwisted.media.call import MediaConfig
MediaConfig()
print(",".join(m for m in ("numpy", "pylibsrtp", "voiptwisted.sdp.negotiation",
                           "voiptwisted.codecs.g711") if m in sys.modules))
"""


class LazyImportTests(unittest.SynchronousTestCase):
    """Issue 6 (idle RSS <= 60 MB): numpy and pylibsrtp load with the first call, not before."""

    def test_service_start_imports_stay_light(self) -> None:
        """What ``twistd voip`` imports and builds at start-up loads no call-only module."""
        import subprocess
        import sys

        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ, PYTHONPATH=root)
        out = subprocess.run(
            [sys.executable, "-c", _LIGHT_START_PROBE],
            capture_output=True, text=True, env=env, timeout=60, check=True,
        )  # fmt: skip
        self.assertEqual(out.stdout.strip(), "")

    def test_lazy_names_resolve(self) -> None:
        """The names served lazily are the real objects (PEP 562 re-exports)."""
        import voiptwisted.media
        import voiptwisted.media.call
        from voiptwisted.codecs import g711
        from voiptwisted.sdp import negotiation

        self.assertIs(voiptwisted.media.call.NegotiationFailed, negotiation.NegotiationFailed)
        self.assertIs(NegotiationFailed, negotiation.NegotiationFailed)
        self.assertIs(voiptwisted.media.ulaw_encode, g711.ulaw_encode)
        self.assertIs(voiptwisted.media.alaw_decode, g711.alaw_decode)
        with self.assertRaises(AttributeError):
            voiptwisted.media.call.no_such_name  # noqa: B018


class SignalledDTMFTests(unittest.SynchronousTestCase):
    """One key never counts twice: a call takes its keys as SIP INFO or as RFC 4733 events,
    whichever way the first key came (``CallMedia.signalled_dtmf``, RFC 6086 / RFC 4733)."""

    def call(self) -> tuple[CallMedia, Collector]:
        clock = UDPClock()
        config = MediaConfig(reactor=clock, pacer=Pacer(clock), srtp="off",
                             port_range=(31000, 31200))
        caller = CallMedia.create_offer(config, "127.0.0.1")
        callee = CallMedia.answer_offer(config, caller.local_sdp, "127.0.0.1")
        self.addCleanup(caller.stop)
        self.addCleanup(callee.stop)
        caller.accept_answer(callee.local_sdp)
        session = Collector(FakeDialog())
        callee.start(session)
        return callee, session

    def press(self, media: CallMedia, digits: str, start: int = 0) -> None:
        pt = media.rtp.telephone_event_pt
        self.assertIsNotNone(pt)
        for seq, entry in enumerate(DTMFSender().packets(digits)):
            if entry is None:
                continue
            marker, offset, payload = entry
            packet = RTPPacket(payload_type=pt, sequence=100 + start + seq,
                               timestamp=1000 + 10 * start + offset,
                               ssrc=77, payload=payload, marker=marker)
            media.rtp.datagramReceived(packet.serialize(), media.rtp.remote)

    def test_info_first_mutes_rfc4733(self) -> None:
        """The first key came as INFO: later RFC 4733 events are counted, not delivered."""
        media, session = self.call()
        self.assertTrue(media.signalled_dtmf())
        self.press(media, "5")
        self.assertEqual(session.digits, [])
        self.assertEqual(media.rtp.stats.dtmf_received, 1)
        self.assertTrue(media.signalled_dtmf())

    def test_rfc4733_first_mutes_info(self) -> None:
        """The first key came as RFC 4733: it is delivered and INFO keys are not."""
        media, session = self.call()
        self.press(media, "5")
        self.assertEqual(session.digits, ["5"])
        self.assertFalse(media.signalled_dtmf())
        self.press(media, "7", start=100)
        self.assertEqual(session.digits, ["5", "7"])
