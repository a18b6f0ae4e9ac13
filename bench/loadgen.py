"""Load generator for ``bench/media_calls.py``: N PCMA, G.722 or Opus calls on loopback.

Runs as its own process, pinned to one core, driven over stdin/stdout with
one JSON line each way per step (``media_calls.py`` does this for you):

1. it binds one UDP socket per call on 127.0.0.1 and prints
   ``{"offers": [sdp, ...]}`` (``RTP/AVP``, or ``RTP/SAVP`` with a fresh
   AES_CM_128_HMAC_SHA1_80 key per call with ``--srtp``);
2. it reads ``{"answers": [sdp, ...], "t0": ..., "send_seconds": ...,
   "drain": ...}`` (``t0`` on ``time.monotonic``, which is one clock for all
   processes of the machine), connects each socket to the port in the answer
   and, from ``t0`` on, sends one 20 ms packet per call against absolute
   deadlines (the calls are spread over ``--phases`` slots per 20 ms, as real
   calls do not all start on the same millisecond);
3. it receives the echoes until ``drain`` seconds after the last send and
   prints one result line: packets sent, echoes received and checked, its own
   pacing lateness and the round-trip times.

Each PCMA payload carries the call index and a per-call counter, so an echo is
checked (right call, payload unchanged by the A-law decode/encode round
trip, which is the identity) and timed.  With ``--codec g722`` or ``opus`` the
packets are real G.722/Opus frames of speech-like audio, which the service
decodes and encodes again: an echo is then counted when it is a packet of the
right payload type on the right call (its bytes cannot match), and no
round-trip time is taken.  SRTP is done with pylibsrtp, as the
service does.  Loopback only; every loop is bounded by time and by count.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import secrets
import select
import socket
import struct
import sys
import time
from array import array

import pylibsrtp

PT_PCMA = 8
FRAME = 0.02
SAMPLES = 160
#: Per codec: payload type, SDP rtpmap (and fmtp) lines, RTP timestamp step per 20 ms.
CODECS = {
    "pcma": (8, ["a=rtpmap:8 PCMA/8000"], 160),
    "g722": (9, ["a=rtpmap:9 G722/8000"], 160),
    "opus": (111, ["a=rtpmap:111 opus/48000/2", "a=fmtp:111 useinbandfec=1;stereo=0"], 960),
}
#: Payload = call index (2 bytes) + counter (4 bytes) + this A-law filler.
_FILLER = bytes((0xD5 ^ (i & 0x0F)) for i in range(SAMPLES - 6))
_HEADER = struct.Struct("!BBHII")
_TAG = struct.Struct("!HI")
#: Send times kept per call for round-trip times (a ring; echoes come back within ~100 ms).
RING = 256
#: Round-trip samples kept in all (bounds memory on long runs).
MAX_RTT_SAMPLES = 400_000
#: Datagrams read from one ready socket per poll before serving the others.
READ_BURST = 8
SUITE = "AES_CM_128_HMAC_SHA1_80"
_PORT_RE = re.compile(r"^m=audio (\d+) (RTP/S?AVP)", re.M)
_CRYPTO_RE = re.compile(r"^a=crypto:\d+ (\S+) inline:([A-Za-z0-9+/=]+)", re.M)


def offer_sdp(port: int, master: bytes | None, session_id: int, codec: str = "pcma") -> str:
    """A plain RFC 4566 audio offer: *codec* + telephone-event, ptime 20, rtcp-mux."""
    profile = "RTP/SAVP" if master is not None else "RTP/AVP"
    pt, rtpmap, step = CODECS[codec]
    event_rate = 8000 if step == 160 else 48000
    lines = [
        "v=0",
        f"o=loadgen {session_id} 1 IN IP4 127.0.0.1",
        "s=loadgen",
        "c=IN IP4 127.0.0.1",
        "t=0 0",
        f"m=audio {port} {profile} {pt} 101",
        *rtpmap,
        f"a=rtpmap:101 telephone-event/{event_rate}",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
        "a=rtcp-mux",
    ]
    if master is not None:
        lines.append(f"a=crypto:1 {SUITE} inline:{base64.b64encode(master).decode('ascii')}")
    return "\r\n".join(lines) + "\r\n"


def parse_answer(sdp: str, srtp: bool) -> tuple[int, bytes | None]:
    """(port, peer master key||salt or None) from the service's answer; ValueError if unusable."""
    match = _PORT_RE.search(sdp)
    if match is None or int(match.group(1)) == 0:
        raise ValueError("answer has no usable m=audio line")
    if not srtp:
        return int(match.group(1)), None
    crypto = _CRYPTO_RE.search(sdp)
    if crypto is None or crypto.group(1) != SUITE:
        raise ValueError("SRTP answer without an AES_CM_128_HMAC_SHA1_80 a=crypto line")
    return int(match.group(1)), base64.b64decode(crypto.group(2))


def _percentiles(values: array, points: tuple[float, ...]) -> dict[str, float | None]:
    if not values:
        return {f"p{p:g}": None for p in points} | {"max": None}
    ordered = sorted(values)
    out: dict[str, float | None] = {}
    for p in points:
        index = min(len(ordered) - 1, round(p / 100.0 * (len(ordered) - 1)))
        out[f"p{p:g}"] = ordered[index]
    out["max"] = ordered[-1]
    return out


def run_queue_wait() -> float:
    """Seconds this process has spent runnable but waiting for a CPU (/proc/self/schedstat)."""
    with open("/proc/self/schedstat", encoding="ascii") as handle:
        return int(handle.read().split()[1]) / 1e9


class Call:
    """One generated call: its socket, RTP state, optional SRTP sessions and counters."""

    __slots__ = (
        "bad",
        "counter",
        "echoed",
        "errors",
        "index",
        "master",
        "payloads",
        "pt",
        "rtcp",
        "rx",
        "seq",
        "sock",
        "ssrc",
        "step",
        "times",
        "ts",
        "tx",
    )

    def __init__(self, index: int, srtp: bool, codec: str = "pcma",
                 payloads: list[bytes] | None = None) -> None:
        self.index = index
        self.pt, _, self.step = CODECS[codec]
        #: Pre-encoded frames sent in turn (G.722/Opus), or None: the tagged PCMA payload.
        self.payloads = payloads
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.master = secrets.token_bytes(30) if srtp else None
        self.tx: pylibsrtp.Session | None = None
        self.rx: pylibsrtp.Session | None = None
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbits(16)
        self.ts = secrets.randbits(32)
        self.counter = 0
        self.times = array("d", bytes(8 * RING))
        self.echoed = 0
        self.bad = 0
        self.rtcp = 0
        self.errors = 0

    def connect(self, port: int, peer_master: bytes | None) -> None:
        self.sock.connect(("127.0.0.1", port))
        if self.master is not None:
            profile = pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80
            self.tx = pylibsrtp.Session(pylibsrtp.Policy(
                key=self.master, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=profile))
            self.rx = pylibsrtp.Session(pylibsrtp.Policy(
                key=peer_master, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                srtp_profile=profile))

    def send(self, now: float) -> None:
        marker = 0x80 if self.counter == 0 else 0
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + self.step) & 0xFFFFFFFF
        if self.payloads is None:
            payload = _TAG.pack(self.index, self.counter) + _FILLER
        else:
            payload = self.payloads[self.counter % len(self.payloads)]
        packet = _HEADER.pack(0x80, self.pt | marker, self.seq, self.ts, self.ssrc) + payload
        if self.tx is not None:
            packet = self.tx.protect(packet)
        self.times[self.counter % RING] = now
        self.counter += 1
        try:
            self.sock.send(packet)
        except OSError:
            self.errors += 1

    def receive(self, rtts: array) -> None:
        for _ in range(READ_BURST):
            try:
                data = self.sock.recv(2048)
            except BlockingIOError:
                return
            except OSError:
                self.errors += 1
                return
            now = time.monotonic()
            if len(data) < 12:
                self.bad += 1
                continue
            if 200 <= data[1] <= 204:
                self.rtcp += 1
                continue
            if self.rx is not None:
                try:
                    data = self.rx.unprotect(data)
                except pylibsrtp.Error:
                    self.bad += 1
                    continue
            if self.payloads is not None:
                # A re-encoded G.722/Opus frame: right payload type, something in it.
                if len(data) <= 12 or data[1] & 0x7F != self.pt:
                    self.bad += 1
                    continue
                self.echoed += 1
                continue
            # header 12 bytes (the service sends no CSRC/extension) + 160 bytes payload
            if len(data) != 12 + SAMPLES or data[1] & 0x7F != PT_PCMA:
                self.bad += 1
                continue
            index, counter = _TAG.unpack_from(data, 12)
            if index != self.index or counter >= self.counter or data[18:] != _FILLER:
                self.bad += 1
                continue
            self.echoed += 1
            if self.counter - counter < RING and len(rtts) < MAX_RTT_SAMPLES:
                rtts.append(now - self.times[counter % RING])


def run(calls: list[Call], t0: float, send_seconds: float, drain: float, phases: int) -> dict:
    """Send from t0 for send_seconds on absolute deadlines, receive until drain after."""
    by_fd = {call.sock.fileno(): call for call in calls}
    poller = select.epoll()
    for fd in by_fd:
        poller.register(fd, select.EPOLLIN)
    groups = [calls[g::phases] for g in range(phases)]
    slot_len = FRAME / phases
    frames = round(send_seconds / FRAME)
    n_slots = frames * phases
    end = t0 + frames * FRAME + drain
    lateness = array("d")
    rtts = array("d")
    slot = 0
    delay = t0 - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    waited = run_queue_wait()
    # Bound on loop turns: one per slot plus generous room for receive wake-ups.
    max_turns = n_slots + int((end - t0) * 50_000) + 1000
    for _ in range(max_turns):
        now = time.monotonic()
        while slot < n_slots and now >= t0 + slot * slot_len:
            lateness.append(now - (t0 + slot * slot_len))
            for call in groups[slot % phases]:
                call.send(now)
            slot += 1
            now = time.monotonic()
        if now >= end:
            break
        wake = t0 + slot * slot_len if slot < n_slots else end
        for fd, _events in poller.poll(max(0.0, wake - now)):
            by_fd[fd].receive(rtts)
    poller.close()
    waited = run_queue_wait() - waited
    sent = sum(call.counter for call in calls)
    # A re-encoded echo cannot be matched to its packet: count at most one per packet sent.
    echoed = sum(min(call.echoed, call.counter) for call in calls)
    ms = 1000.0
    late = _percentiles(lateness, (50, 99))
    rtt = _percentiles(rtts, (50, 99))
    return {
        "calls": len(calls),
        "sent": sent,
        "echoed": echoed,
        "bad": sum(call.bad for call in calls),
        "rtcp": sum(call.rtcp for call in calls),
        "errors": sum(call.errors for call in calls),
        "unfinished_slots": n_slots - slot,
        "silent_calls": sum(1 for call in calls if call.echoed == 0),
        "loss": (1.0 - echoed / sent) if sent else None,
        "run_queue_wait_percent": 100.0 * waited / (end - t0),
        "send_lateness_ms": {k: (v * ms if v is not None else None) for k, v in late.items()},
        "rtt_ms": {k: (v * ms if v is not None else None) for k, v in rtt.items()},
    }


def encoded_speech(codec: str) -> list[bytes] | None:
    """One second of speech-like audio as 50 G.722 or Opus frames (None for PCMA)."""
    if codec == "pcma":
        return None
    from tests.codecs.signals import frames, speech

    if codec == "g722":
        from voiptwisted.codecs.g722 import G722Encoder

        encoder: object = G722Encoder()
        audio = frames(speech(16000), 320)
    else:
        from voiptwisted.codecs.opus import OpusEncoder

        encoder = OpusEncoder()
        audio = frames(speech(48000), 960)
    return [encoder.encode(frame) for frame in audio]  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, required=True)
    parser.add_argument("--srtp", action="store_true")
    parser.add_argument("--phases", type=int, default=10)
    parser.add_argument("--core", type=int, default=None)
    parser.add_argument("--codec", choices=sorted(CODECS), default="pcma")
    args = parser.parse_args(argv)
    if not 1 <= args.calls <= 5000 or not 1 <= args.phases <= 20:
        parser.error("--calls must be 1..5000 and --phases 1..20")
    if args.core is not None:
        os.sched_setaffinity(0, {args.core})
    payloads = encoded_speech(args.codec)
    calls = [Call(i, args.srtp, args.codec, payloads) for i in range(args.calls)]
    offers = [offer_sdp(c.sock.getsockname()[1], c.master, c.ssrc, args.codec) for c in calls]
    print(json.dumps({"offers": offers}), flush=True)
    line = sys.stdin.readline()
    if not line:
        return 1
    plan = json.loads(line)
    answers = plan["answers"]
    if len(answers) != len(calls):
        print(json.dumps({"error": "answer count mismatch"}), flush=True)
        return 1
    for call, answer in zip(calls, answers, strict=True):
        port, peer_master = parse_answer(answer, args.srtp)
        call.connect(port, peer_master)
    result = run(calls, float(plan["t0"]), float(plan["send_seconds"]), float(plan["drain"]),
                 args.phases)
    for call in calls:
        call.sock.close()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
