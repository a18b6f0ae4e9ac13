"""50 concurrent SIPp calls with RTP for 10 s through Kamailio; < 0.1 % packets lost (issue 4).

Our UA registers over TLS with ``voiptwisted.sip.connect.run`` and answers every call
with an :class:`~voiptwisted.media.session.EchoSession`.  One SIPp process places 50
calls through Kamailio (TCP towards Kamailio, TLS from Kamailio to us); each call streams
10 s of PCMA (``rtp_stream``, 20 ms packets) from its own RTP port, which also receives our
echo.  Loss is measured on our side per call from RTP sequence numbers (RFC 3550 §A.3:
expected = extended highest sequence - first sequence + 1; lost = expected - received).
Afterwards no dialog, transaction, timer or RTP port of ours may remain.
SIPp runs in the background and is polled without blocking the reactor.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from tests.integration.peers import SippResult
from tests.integration.support import (
    EchoDialog,
    KamailioCallTestCase,
    eventually,
    exec_action,
    uac_scenario,
)
from voiptwisted.codecs.g711 import alaw_encode
from voiptwisted.media.session import EchoSession

CALLS = 50
SECONDS = 10
#: The media port range of this test only, so leaks are attributable to it.
PORT_RANGE = (17000, 17400)
#: SDP media of SIPp's offer: PCMA from its rtp_stream port.
MEDIA = ["m=audio [rtpstream_audio_port] RTP/AVP 8", "a=rtpmap:8 PCMA/8000", "a=ptime:20"]


def bound_udp_ports(low: int, high: int) -> list[int]:
    """Local UDP ports in [low, high] held by sockets of this process (/proc/net/udp*)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as handle:
                lines = handle.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[9] in inodes:
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if low <= port <= high:
                    found.append(port)
    return sorted(found)


class MeasuredEcho(EchoSession):
    """EchoSession that keeps each call's final RTP statistics (taken when media stops)."""

    finished: list[Any] = []
    started = 0
    #: Frames the echo let go by design: older frames dropped when a burst arrived
    #: (a late reactor delivers several packets at once), summed over all calls.
    dropped_frames = 0

    def start(self) -> None:
        type(self).started += 1

    def stop(self) -> None:
        stats = self.stats
        if stats is not None:
            type(self).finished.append(stats)
            type(self).dropped_frames += self.dropped_samples // self.frame_size


class MeasuredEchoDialog(EchoDialog):
    session_class = MeasuredEcho


class MediaLoadTests(KamailioCallTestCase):
    timeout = 90
    tmp_prefix = "media-load-"

    def setUp(self) -> None:
        super().setUp()
        MeasuredEcho.finished = []
        MeasuredEcho.started = 0
        MeasuredEcho.dropped_frames = 0

    def stream_file(self) -> str:
        """One second of a 440 Hz tone as raw PCMA (what SIPp's rtp_stream loops)."""
        t = np.arange(8000) / 8000.0
        tone = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
        path = os.path.join(self.tmpdir(), "tone.alaw")
        with open(path, "wb") as handle:
            handle.write(bytes(alaw_encode(tone)))
        return path

    async def test_fifty_concurrent_echo_calls(self) -> None:
        """Issue 4: 50 concurrent calls x 10 s of RTP, < 0.1 % lost, nothing left behind."""
        self.assertEqual(bound_udp_ports(*PORT_RANGE), [], "port range busy before the test")
        protocol = await self.register_us(MeasuredEchoDialog, port_range=PORT_RANGE)
        tmp = self.tmpdir()
        actions = (
            exec_action(f'rtp_stream="{self.stream_file()},-1,8"', SECONDS * 1000)
            + exec_action('rtp_stream="pause"')
        )
        sipp = self.sipp(
            uac_scenario(tmp, "uac_rtp_stream", MEDIA, actions),
            self.kamailio.address("tcp"),
            transport="t1",
            service="alice",
            calls=CALLS,
            rate=CALLS,
            extra_args=["-l", str(CALLS), "-rp", "1000"],
            timeout=SECONDS + 30,
            tmpdir=tmp,
        )
        sipp.start()
        result: SippResult = await self.finish(sipp, SECONDS + 35)
        self.assertEqual(
            (result.returncode, result.successful, result.failed), (0, CALLS, 0),
            result.errors[-2000:] or result.log[-2000:],
        )
        await eventually(lambda: len(MeasuredEcho.finished) == CALLS, 10, "all media stopped")
        self.assertEqual(MeasuredEcho.started, CALLS)

        received = sum(s.packets_received for s in MeasuredEcho.finished)
        lost = sum(max(s.lost, 0) for s in MeasuredEcho.finished)
        expected = received + lost
        sent = sum(s.packets_sent for s in MeasuredEcho.finished)
        # 50 calls x 10 s x 50 packets/s; allow for SIPp's start-up and the BYE race.
        self.assertGreater(expected, 0.9 * CALLS * SECONDS * 50)
        self.assertLess(lost / expected, 0.001, f"lost {lost} of {expected} packets")
        # The echo went back: nearly every packet received was sent back or let go where
        # the echo drops by design (a burst beyond its 60 ms, a packet too late to play, a
        # tick the pacer skipped, a datagram a full socket buffer refused).  A quiet run
        # echoes 99.7 %; a loaded CI runner once 94.9 % before counting what was let go.
        let_go = MeasuredEcho.dropped_frames + sum(
            s.late + s.skipped_ticks + s.send_failures for s in MeasuredEcho.finished
        )
        self.assertGreater(
            sent + let_go, 0.9 * received,
            f"echoed {sent} and let go {let_go} of {received} packets",
        )
        for stats in MeasuredEcho.finished:
            self.assertGreater(stats.packets_received, 0.9 * SECONDS * 50, stats)
            self.assertGreater(stats.packets_sent, 0.5 * stats.packets_received, stats)

        await self.assertNothingLeft(protocol)
        await eventually(lambda: bound_udp_ports(*PORT_RANGE) == [], 5, "RTP ports released")
