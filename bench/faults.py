"""Soak and fault benchmarks (issue 17 item 6): ``python bench/faults.py --scenario all``.

Not tests: each scenario measures what our UA does when something goes wrong and reports
the figures as they are, good or bad (``--quick`` for a short trial run).  What runs, all on
127.0.0.1 with ports chosen at run time, every process started here stopped by its PID:

* Kamailio (``tests/integration/peers.Kamailio``): registrar + record-routing proxy.
* **Our UA**: ``twistd -n voip --app echo`` registering ``alice`` over TLS (RFC 5626 flow)
  with a password file; its RSS, fds and UDP sockets are read from /proc/PID.
* SIPp (``peers.Sipp``) as the far end, over UDP to Kamailio, which relays to our TLS flow:
  each call INVITEs alice, ACKs, streams PCMA RTP in a loop (SIPp ``rtp_stream``) for ``-d``
  ms, then sends BYE.  In the registrar and silent scenarios it is a compliant far end for
  our target refresh after flow recovery: it answers a re-INVITE or UPDATE 200 at any point
  of the hold and sends its BYE to the refreshed Contact (RFC 3261 §12.2.1.2).  Its
  ``-trace_msg`` log tells which BYEs got which answer.
* A raw ``AF_PACKET`` socket on ``lo`` (root only; skipped otherwise or with
  ``--no-capture``) timestamps the RTP of our UA's own sockets in the fault scenarios (gaps
  per stream, last packet before a timeout) and for 2 s in the middle of the soak.
* ``bench/blackhole_relay.py``: a TCP relay between our UA and Kamailio's TLS port that can
  turn silent (no FIN/RST, bytes dropped) for the silent-flow scenario.

Scenarios (``--scenario soak,registrar,silent,vanish,sigterm`` or ``all``):

1. ``soak``: ``--soak-calls`` calls (10,000; 1,000 with ``--quick``) at ``--soak-rate`` cps
   (50), ``--soak-hold-ms`` (1000) each with RTP: failures, RSS idle / every 1,000 calls /
   after all, fds and UDP sockets after vs idle, tracebacks in the log, our UA's CPU and
   run-queue wait (how much other work on the machine held it back).
2. ``registrar``: 20 calls up, ``kill -9`` of Kamailio's process group, restarted on the same
   ports 5 s later: time to re-register, RTP gaps on our side, the far end's BYEs (200 vs
   477/408/481), whether our UA released the calls (and how).
3. ``silent``: the relay goes silent (3 rounds; 1 with ``--quick``) with a call up: time to
   detect (keepalive + pong timeout) and re-register, the far end's BYE after the rounds,
   whether the call ends.
4. ``vanish``: calls up, SIPp killed (-9): our UA (``--rtp-timeout 5``) must hang up; time
   from the last RTP packet to our BYE (seen by Kamailio) and to sockets released.
5. ``sigterm``: 50 calls up, SIGTERM: time to exit, BYEs the far end received and answered.

Results go to the "Soak and faults" section of ``bench/RESULTS.md`` (``--no-write`` to skip):
the subsections of the scenarios that ran are replaced, the others kept.  ``--scenario all``
takes about 8 minutes (``--quick``: about 3).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.blackhole_relay import BlackHoleRelay  # noqa: E402
from tests.integration.peers import Kamailio, PeerError, Sipp  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
SECTION = "## Soak and faults"
TWISTD = str(Path(sys.executable).with_name("twistd"))
SCENARIOS = ("soak", "registrar", "silent", "vanish", "sigterm")
#: Poll interval of every wait loop, in seconds.
POLL = 0.05
#: Our UA's log line when a flow's keepalive starts requiring pongs (one per flow).
_PONG_REQUIRED = r"ends the flow \((?:flow answered a ping|registrar signalled outbound)"
#: SIPp's Call-ID / BYE parsing of its ``-trace_msg`` log.
_BLOCK_RE = re.compile(
    r"^-+ (?P<stamp>[\d-]+\s[\d:.]+)\s*\n(?P<kind>UDP|TCP) message (?P<dir>sent|received)"
    r"[^\n]*\n\n(?P<body>.*?)(?=^-+ [\d-]+\s[\d:.]+|\Z)",
    re.S | re.M,
)

# ------------------------------------------------------------------------------------------
# SIPp scenario: INVITE, ACK, RTP loop for -d ms, BYE (written at run time: the audio path)

_UAC_RTP = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac_rtp_loop">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      User-Agent: SIPp
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [rtpstream_audio_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
      a=ptime:20

    ]]>
  </send>

  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true" rtd="true"/>

  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>

  <nop>
    <action>
      <exec rtp_stream="@@AUDIO@@,-1,8"/>
    </action>
  </nop>

  <pause/>

  <send retrans="500">
    <![CDATA[

      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>

  <recv response="200" crlf="true"/>
</scenario>
"""


# The registrar and silent scenarios' far end also acts as a compliant peer when our UA
# refreshes its target (RFC 5626 §4.2.1, RFC 3261 §12.2): a re-INVITE (its Allow lacks
# UPDATE, so ours sends one with the same SDP) or an UPDATE may come at any point of the hold.
# SIPp only matches an in-dialog request during a pause through a recv with
# optional="global" placed before it (here among the INVITE's optional responses: SIPp wants a
# mandatory recv after optional ones); its next= jumps out of the pause, so the hold is a deadline
# (gettimeofday at the ACK, in ms) and each wait pauses for what is left of it.  The 2xx
# makes the refresh's Contact the remote target (§12.2.1.2): the BYE goes to [$target]
# (first the 200's Contact, the same URI as [next_url]) through the route set of the first
# 200 ([routes]: a target refresh never changes it), with the callee's To from that 200.
_UAC_RTP_REFRESH = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac_rtp_loop_refresh">
  <send retrans="500">
    <![CDATA[

      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      User-Agent: SIPp
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [rtpstream_audio_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
      a=ptime:20

    ]]>
  </send>

  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv request="INVITE" optional="global" next="reinvite">
    <action>
      <ereg regexp="sips?:[^&gt;]*" search_in="hdr" header="Contact:" check_it="true"
            assign_to="target"/>
    </action>
  </recv>
  <recv request="UPDATE" optional="global" next="update">
    <action>
      <ereg regexp="sips?:[^&gt;]*" search_in="hdr" header="Contact:" check_it="true"
            assign_to="target"/>
    </action>
  </recv>
  <recv response="200" rrs="true" rtd="true">
    <action>
      <ereg regexp="sips?:[^&gt;]*" search_in="hdr" header="Contact:" check_it="true"
            assign_to="target"/>
      <ereg regexp=".*" search_in="hdr" header="To:" check_it="true" assign_to="callee_to"/>
    </action>
  </recv>

  <send>
    <![CDATA[

      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>

  <nop next="wait">
    <action>
      <exec rtp_stream="@@AUDIO@@,-1,8"/>
      <gettimeofday assign_to="deadline,deadline_us"/>
      <multiply assign_to="deadline" value="1000"/>
      <divide assign_to="deadline_us" value="1000"/>
      <add assign_to="deadline" variable="deadline_us"/>
      <add assign_to="deadline" value="@@HOLD_MS@@"/>
    </action>
  </nop>

  <label id="reinvite"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=sipp 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [rtpstream_audio_port] RTP/AVP 8
      a=rtpmap:8 PCMA/8000
      a=ptime:20

    ]]>
  </send>
  <recv request="ACK" timeout="10000" ontimeout="wait" next="wait"/>

  <label id="update"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>

  <label id="wait"/>
  <nop>
    <action>
      <gettimeofday assign_to="remaining,now_us"/>
      <multiply assign_to="remaining" value="-1000"/>
      <divide assign_to="now_us" value="-1000"/>
      <add assign_to="remaining" variable="now_us"/>
      <add assign_to="remaining" variable="deadline"/>
    </action>
  </nop>
  <pause variable="remaining"/>

  <send retrans="500">
    <![CDATA[

      BYE [$target] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      [routes]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag09[call_number]
      To:[$callee_to]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:sipp@[local_ip]:[local_port];transport=[transport]>
      Content-Length: 0

    ]]>
  </send>

  <recv response="200" crlf="true"/>
</scenario>
"""


def write_scenario(workdir: Path) -> str:
    """The UAC scenario and its audio (2 s of a 440 Hz tone, raw A-law) in *workdir*."""
    audio = workdir / "tone.al"
    subprocess.run(
        ["sox", "-n", "-r", "8000", "-c", "1", "-e", "a-law", "-t", "raw", str(audio),
         "synth", "2", "sine", "440", "vol", "0.5"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    path = workdir / "uac_rtp_loop.xml"
    path.write_text(_UAC_RTP.replace("@@AUDIO@@", str(audio)))
    return str(path)


def write_refresh_scenario(workdir: Path, hold_ms: int) -> str:
    """The UAC scenario that accepts target refreshes, holding each call *hold_ms* from its
    ACK (a deadline in the scenario, not ``-d``), with the audio of :func:`write_scenario`."""
    path = workdir / f"uac_rtp_loop_refresh-{hold_ms}.xml"
    path.write_text(
        _UAC_RTP_REFRESH.replace("@@AUDIO@@", str(workdir / "tone.al")).replace(
            "@@HOLD_MS@@", str(int(hold_ms))
        )
    )
    return str(path)


# ------------------------------------------------------------------------------------------
# /proc readings of our UA


def rss_mb(pid: int) -> float:
    """VmRSS of *pid* in MB (nan if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _udp_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    for name in ("udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9:
                inodes.add(fields[9])
    return inodes


def fd_counts(pid: int) -> tuple[int, int]:
    """(open fds, UDP sockets) of *pid*; (-1, -1) if it is gone."""
    try:
        links = []
        for entry in os.listdir(f"/proc/{pid}/fd"):
            try:
                links.append(os.readlink(f"/proc/{pid}/fd/{entry}"))
            except OSError:
                continue
    except OSError:
        return -1, -1
    udp = _udp_inodes(pid)
    sockets = [link[8:-1] for link in links if link.startswith("socket:[")]
    return len(links), sum(1 for inode in sockets if inode in udp)


def fd_kinds(pid: int) -> dict[str, int]:
    """How many fds of *pid* are of each kind (socket, pipe, anon_inode:..., a file path)."""
    kinds: dict[str, int] = {}
    try:
        entries = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return kinds
    for entry in entries:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue
        kind = re.sub(r":\[\d+\]$", "", link)
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def fd_difference(before: dict[str, int], after: dict[str, int]) -> str:
    """The fd kinds whose count changed, e.g. ``socket +1``."""
    changes = [
        f"{kind} {after.get(kind, 0) - before.get(kind, 0):+d}"
        for kind in sorted(set(before) | set(after))
        if after.get(kind, 0) != before.get(kind, 0)
    ]
    return ", ".join(changes) or "none"


def runqueue_wait(pid: int) -> float:
    """Seconds *pid* spent runnable but waiting for a core (/proc/PID/schedstat)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return float("nan")


def cpu_seconds(pid: int) -> float:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted *values* (nan when empty)."""
    if not values:
        return float("nan")
    return values[min(len(values), max(1, math.ceil(fraction * len(values)))) - 1]


def wait_for(predicate: Callable[[], Any], timeout: float) -> tuple[Any, float]:
    """Poll *predicate* every POLL s for at most *timeout* s: (last value, when it held)."""
    deadline = time.monotonic() + timeout
    value = None
    for _ in range(int(timeout / POLL) + 2):
        value = predicate()
        if value:
            return value, time.monotonic()
        if time.monotonic() > deadline:
            break
        time.sleep(POLL)
    return value, float("nan")


class UA:
    """``twistd -n voip`` registering alice at *aor* (a password file, never argv)."""

    def __init__(self, workdir: Path, kamailio: Kamailio, aor: str, *extra: str) -> None:
        self.workdir = workdir
        self.log_path = workdir / f"twistd-{len(list(workdir.glob('twistd-*.log')))}.log"
        password = workdir / "password"
        password.write_text(kamailio.users["alice"] + "\n")
        password.chmod(0o600)
        # Below the harness's port range (20000-32000: SIPp's media ports) and the ephemeral
        # range, so the RTP capture never mistakes a peer's port for ours.
        # 2,000 calls' worth (an overloaded run shows up as failed calls before the range
        # ends), above the ephemeral range and outside twistd's default 10000-20000 and the
        # harness's 20000-32000, where other processes' RTP runs.
        base = 61000
        self.rtp_ports = (base, base + 3998)
        env = dict(os.environ)
        env.pop("SIP_PASSWORD", None)
        env["PYTHONPATH"] = str(ROOT) + (
            os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
        )
        self.argv = [
            TWISTD, "-n", "--pidfile=", "voip",
            "--state-dir", str(workdir / "state"),
            "--aor", aor,
            "--ca-file", str(kamailio.ca_cert),
            "--password-file", str(password),
            "--rtp-ports", f"{base}-{base + 3998}",
            *extra,
        ]  # fmt: skip
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(workdir), env=env,
            start_new_session=True,
        )  # fmt: skip
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def count(self, pattern: str) -> int:
        return len(re.findall(pattern, self.log))

    def tracebacks(self) -> int:
        return self.count(r"Traceback \(most recent call last\)")

    def sockets(self) -> tuple[int, int]:
        return fd_counts(self.pid)

    def udp_ports(self) -> frozenset[int]:
        """The local ports of our UA's UDP sockets (its RTP/RTCP ports right now)."""
        ports = set()
        try:
            links = [
                os.readlink(f"/proc/{self.pid}/fd/{e}") for e in os.listdir(f"/proc/{self.pid}/fd")
            ]
        except OSError:
            return frozenset()
        inodes = {link[8:-1] for link in links if link.startswith("socket:[")}
        for name in ("udp", "udp6"):
            try:
                lines = Path(f"/proc/{self.pid}/net/{name}").read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                fields = line.split()
                if len(fields) > 9 and fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
        return frozenset(ports)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


# ------------------------------------------------------------------------------------------
# RTP on the wire (AF_PACKET on lo)


class RtpSniffer:
    """Timestamps UDP packets from/to our UA's RTP port range seen on ``lo``.

    ``sent``: our UA -> far end; ``received``: far end -> our UA, each per UA port: packet
    count, last time, and gaps longer than ``gap`` s (bounded list).  A loopback packet is
    seen twice by AF_PACKET (outgoing, then incoming): only the outgoing copy counts.
    """

    PACKET_OUTGOING = 4

    def __init__(self, ports: tuple[int, int], gap: float = 0.2) -> None:
        self.low, self.high = ports
        #: Only these ports count once :meth:`track` was called (other processes' RTP may
        #: use the same range).
        self.ports: frozenset[int] | None = None
        self.gap = gap
        self.lock = threading.Lock()
        self.flows: dict[tuple[str, int], list[float]] = {}  # [count, first, last]
        self.gaps: list[tuple[str, int, float, float]] = []
        self._stop = threading.Event()
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(3))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.1)
        self._thread = threading.Thread(target=self._loop, name="rtp-sniffer", daemon=True)

    #: False with --no-capture.
    enabled = True

    @classmethod
    def maybe(cls, ports: tuple[int, int]) -> RtpSniffer | None:
        if not cls.enabled:
            return None
        try:
            return cls(ports).start()
        except (PermissionError, OSError, AttributeError) as exc:
            print(f"  (no RTP capture: {exc})", flush=True)
            return None

    def start(self) -> RtpSniffer:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                frame, address = self.sock.recvfrom(256)
            except TimeoutError:
                continue
            except OSError:
                return
            if (
                address[2] != self.PACKET_OUTGOING
                or len(frame) < 42
                or frame[12:14] != b"\x08\x00"
            ):
                continue
            header = (frame[14] & 0x0F) * 4
            if frame[23] != 17 or len(frame) < 14 + header + 4:
                continue
            src, dst = struct.unpack_from("!HH", frame, 14 + header)
            ports = self.ports
            if self.low <= src <= self.high and src % 2 == 0 and (ports is None or src in ports):
                key = ("sent", src)
            elif self.low <= dst <= self.high and dst % 2 == 0 and (ports is None or dst in ports):
                key = ("received", dst)
            else:
                continue
            now = time.monotonic()
            with self.lock:
                flow = self.flows.get(key)
                if flow is None:
                    self.flows[key] = [1, now, now]
                    continue
                if now - flow[2] > self.gap and len(self.gaps) < 100_000:
                    self.gaps.append((key[0], key[1], flow[2], now))
                flow[0] += 1
                flow[2] = now

    def track(self, ports: frozenset[int]) -> None:
        """Count only *ports* from now on; forget what other ports did so far."""
        with self.lock:
            self.ports = ports
            self.flows = {k: f for k, f in self.flows.items() if k[1] in ports}
            self.gaps = [g for g in self.gaps if g[1] in ports]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def last(self, direction: str) -> float:
        with self.lock:
            times = [f[2] for k, f in self.flows.items() if k[0] == direction]
        return max(times) if times else float("nan")

    def gaps_between(self, direction: str, start: float, end: float) -> list[float]:
        """Lengths of the gaps (s) of *direction* streams that overlap [start, end]."""
        with self.lock:
            return [
                b - a for d, _, a, b in self.gaps if d == direction and b >= start and a <= end
            ]

    def streams(self, direction: str, since: float) -> int:
        with self.lock:
            return sum(1 for k, f in self.flows.items() if k[0] == direction and f[2] >= since)


# ------------------------------------------------------------------------------------------
# SIPp message log


def sip_blocks(text: str) -> list[tuple[str, str]]:
    """(direction, message) for every message in a SIPp ``-trace_msg`` log."""
    return [(m.group("dir"), m.group("body").strip()) for m in _BLOCK_RE.finditer(text)]


def _header(message: str, name: str) -> str:
    match = re.search(rf"^{name}:\s*(.*)$", message, re.M | re.I)
    return match.group(1).strip() if match else ""


def bye_outcomes(text: str) -> dict[str, Any]:
    """What happened to the far end's BYEs (SIPp's own) and to BYEs it received.

    Only the first BYE SIPp sends in a call counts (the scenario's, CSeq 2): when it fails,
    SIPp's default behaviour aborts the call with one more BYE of its own (a higher CSeq, no
    Route set), which Kamailio answers 404 and which says nothing about our UA.
    """
    first_bye: dict[str, str] = {}
    answers: dict[tuple[str, str], str] = {}
    received: set[str] = set()
    answered_ok: set[str] = set()
    for direction, message in sip_blocks(text):
        first = message.split("\n", 1)[0]
        call_id = _header(message, "Call-ID")
        cseq = _header(message, "CSeq")
        if direction == "sent" and first.startswith("BYE "):
            first_bye.setdefault(call_id, cseq)
        elif direction == "received" and first.startswith("SIP/2.0") and cseq.endswith("BYE"):
            code = first.split()[1]
            if code != "100" or (call_id, cseq) not in answers:
                answers[(call_id, cseq)] = code
        elif direction == "received" and first.startswith("BYE "):
            received.add(call_id)
        elif direction == "sent" and first.startswith("SIP/2.0 200") and cseq.endswith("BYE"):
            answered_ok.add(call_id)
    codes: dict[str, int] = {}
    for call_id, cseq in first_bye.items():
        code = answers.get((call_id, cseq), "none")
        codes[code] = codes.get(code, 0) + 1
    return {
        "sent": len(first_bye),
        "codes": dict(sorted(codes.items())),
        "received": len(received),
        "received_answered_200": len(received & answered_ok),
    }


def sipp_error_kinds(text: str) -> dict[str, int]:
    """SIPp's ``-trace_err`` entries by kind (the line after the timestamp, digits masked)."""
    kinds: dict[str, int] = {}
    for match in re.finditer(r"\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: ([^\n]{1,120})", text):
        kind = re.sub(r"\d+", "N", match.group(1).split(":", 1)[0].strip())
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items(), key=lambda item: -item[1])[:5])


def codes_text(codes: dict[str, int]) -> str:
    return ", ".join(f"{n} x {code}" for code, n in codes.items()) or "none"


# ------------------------------------------------------------------------------------------
# The benchmark


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="bench-faults-"))
        self.scenario_xml = write_scenario(self.workdir)
        self.results: dict[str, dict[str, Any]] = {}
        self._cleanups: list[Callable[[], Any]] = []

    # -- peers ------------------------------------------------------------------------------
    def kamailio(self, name: str, debug: int = 2) -> Kamailio:
        kam = Kamailio(self.workdir / f"kam-{name}", debug=debug, shm_mb=256)
        self._cleanups.append(kam.stop)
        kam.start()
        return kam

    def ua(self, kam: Kamailio, *extra: str, port: int | None = None) -> UA:
        host, tls_port = kam.address("tls")
        aor = f"sip:alice@{host}:{port or tls_port}"
        ua = UA(self.workdir, kam, aor, *extra)
        self._cleanups.append(ua.stop)
        try:
            kam.wait_for_bindings("alice", 1, timeout=30)
        except PeerError as exc:
            raise RuntimeError(f"our UA did not register: {exc}\n{ua.log[-2000:]}") from None
        return ua

    def sipp(self, kam: Kamailio, name: str, calls: int, rate: float, hold_ms: int,
             trace: bool = True, timeout: float = 120, refresh: bool = False) -> Sipp:  # fmt: skip
        """SIPp calling alice; *refresh*: the far end answers target refreshes and sends its
        BYE to the refreshed Contact (:data:`_UAC_RTP_REFRESH`)."""
        directory = self.workdir / f"sipp-{name}"
        directory.mkdir(exist_ok=True)
        scenario = write_refresh_scenario(self.workdir, hold_ms) if refresh else self.scenario_xml
        agent = Sipp(
            scenario, kam.address("udp"), transport="u1", service="alice",
            calls=calls, rate=rate, duration_ms=hold_ms, timeout=timeout, tmpdir=directory,
            extra_args=("-l", str(max(100, calls)), "-buff_size", "4194304"),
        )  # fmt: skip
        if not trace:
            index = agent.argv.index("-trace_msg")
            del agent.argv[index : index + 3]
        self._cleanups.append(agent.stop)
        return agent

    def cleanup(self) -> None:
        for stop in reversed(self._cleanups):
            try:
                stop()
            except Exception as exc:  # keep stopping the others
                print(f"stop: {exc}", file=sys.stderr)
        self._cleanups = []

    def established(self, ua: UA, idle_udp: int, calls: int, timeout: float) -> bool:
        """Wait until our UA holds the RTP+RTCP sockets of *calls* calls."""
        ok, _ = wait_for(lambda: ua.sockets()[1] >= idle_udp + 2 * calls, timeout)
        return bool(ok)

    def released(self, ua: UA, idle_udp: int, timeout: float) -> float:
        """When our UA's UDP sockets were back to idle (nan: not within *timeout*)."""
        return wait_for(lambda: 0 <= ua.sockets()[1] <= idle_udp, timeout)[1]

    # -- 1. soak -------------------------------------------------------------------------------
    def soak(self) -> dict[str, Any]:
        args = self.args
        calls = args.soak_calls
        kam = self.kamailio("soak", debug=1)
        ua = self.ua(kam)
        time.sleep(1.0)
        idle_rss = rss_mb(ua.pid)
        idle_fds, idle_udp = ua.sockets()
        idle_kinds = fd_kinds(ua.pid)
        cpu_before = cpu_seconds(ua.pid)
        wait_before = runqueue_wait(ua.pid)
        loads: list[float] = []
        agent = self.sipp(kam, "soak", calls, args.soak_rate, args.soak_hold_ms, trace=False,
                          timeout=calls / args.soak_rate + 120)  # fmt: skip
        started = time.monotonic()
        agent.start()
        rss_1k = float("nan")
        rtp_sample: dict[str, float] = {}
        rss_series: list[tuple[int, float]] = []
        peak_rss, peak_udp, done = idle_rss, idle_udp, 0
        deadline = started + calls / args.soak_rate + 180
        while agent.running and time.monotonic() < deadline:
            time.sleep(1.0)
            stats = agent.collect()
            done = stats.successful + stats.failed
            peak_rss = max(peak_rss, rss_mb(ua.pid))
            loads.append(os.getloadavg()[0])
            peak_udp = max(peak_udp, ua.sockets()[1])
            if done >= 1000 and rss_1k != rss_1k:
                rss_1k = rss_mb(ua.pid)
            if done >= 1000 * (len(rss_series) + 1):
                rss_series.append((done, rss_mb(ua.pid)))
            if done >= calls // 2 and not rtp_sample:
                rtp_sample = self.rtp_sample(ua)
        elapsed = time.monotonic() - started
        waited = runqueue_wait(ua.pid) - wait_before
        result = agent.stop() if agent.running else agent.collect()
        if rss_1k != rss_1k and result.successful + result.failed >= 1000:
            rss_1k = rss_mb(ua.pid)
        sipp_done = time.monotonic()
        # Calls the far end abandoned (an overloaded run) end by the 60 s RTP timeout.
        released = self.released(ua, idle_udp, 75)
        time.sleep(1.0)
        fds, udp = ua.sockets()
        figures = {
            "calls": calls,
            "rate": args.soak_rate,
            "hold_ms": args.soak_hold_ms,
            "successful": result.successful,
            "failed": result.failed,
            "elapsed_s": elapsed,
            "rss_idle": idle_rss,
            "rss_1k": rss_1k,
            "rss_end": rss_mb(ua.pid),
            "rss_peak": peak_rss,
            "fds_idle": idle_fds,
            "udp_idle": idle_udp,
            "fds_end": fds,
            "fd_change": fd_difference(idle_kinds, fd_kinds(ua.pid)),
            "udp_end": udp,
            "udp_peak": peak_udp,
            "released": released == released,
            "released_after_s": released - sipp_done,
            "ua_cpu_s": cpu_seconds(ua.pid) - cpu_before,
            "ua_wait_pct": waited / elapsed * 100,
            "load_max": max(loads, default=float("nan")),
            "tracebacks": ua.tracebacks(),
            "rtp_sample": rtp_sample,
            "rss_series": rss_series,
            "error_kinds": sipp_error_kinds(result.errors),
            "errors": " | ".join(result.errors.strip().splitlines()[-3:])[:400],
        }
        ua.stop()
        kam.stop()
        return figures

    @staticmethod
    def rtp_sample(ua: UA, seconds: float = 2.0) -> dict[str, float]:
        """RTP packets/s and streams each way, captured for *seconds* (a lower bound: the
        capture may lose packets under load); {} without capture rights."""
        sniffer = RtpSniffer.maybe(ua.rtp_ports)
        if sniffer is None:
            return {}
        started = time.monotonic()
        known: frozenset[int] = frozenset()
        for _ in range(int(seconds / 0.1)):
            known |= ua.udp_ports()
            sniffer.track(known)
            time.sleep(0.1)
        with sniffer.lock:
            flows = dict(sniffer.flows)
        sniffer.stop()
        elapsed = time.monotonic() - started
        sample: dict[str, float] = {}
        for direction in ("sent", "received"):
            chosen = [f for k, f in flows.items() if k[0] == direction]
            sample[f"{direction}_pps"] = sum(f[0] for f in chosen) / elapsed
            sample[f"{direction}_streams"] = len(chosen)
        # Streams that began inside the capture: far end's first packet -> our first echo.
        delays = sorted(
            flows[("sent", port)][1] - first[1]
            for (direction, port), first in flows.items()
            if direction == "received" and first[1] > started + 0.05 and ("sent", port) in flows
        )
        sample["first_echo_streams"] = len(delays)
        sample["first_echo_p50_ms"] = percentile(delays, 0.5) * 1000
        sample["first_echo_p90_ms"] = percentile(delays, 0.9) * 1000
        return sample

    # -- 2. registrar killed mid-call ------------------------------------------------------------
    def registrar(self) -> dict[str, Any]:
        calls = 20
        kam = self.kamailio("registrar")
        ua = self.ua(kam, "--rtp-timeout", str(self.args.fault_rtp_timeout))
        time.sleep(0.5)
        _, idle_udp = ua.sockets()
        sniffer = RtpSniffer.maybe(ua.rtp_ports)
        hold_ms = 35000
        agent = self.sipp(kam, "registrar", calls, 20, hold_ms, timeout=120, refresh=True)
        agent.start()
        up = self.established(ua, idle_udp, calls, 20)
        if sniffer is not None:
            sniffer.track(ua.udp_ports())
        time.sleep(2.0)
        binding_before = kam.bindings("alice")
        killed = time.monotonic()
        kam._proc.stop(timeout=5, signum=signal.SIGKILL, group=True)
        time.sleep(max(0.0, killed + 5.0 - time.monotonic()))
        kam.start()
        restarted = time.monotonic()
        _, registered = wait_for(lambda: kam.bindings("alice"), 60)
        carried = ua.count(r"call\(s\) carried over to the new flow")
        result_wait = wait_for(lambda: not agent.running, hold_ms / 1000 + 40)
        sipp_done = result_wait[1]
        result = agent.stop() if agent.running else agent.collect()
        byes = bye_outcomes(agent.messages)
        released = self.released(ua, idle_udp, self.args.fault_rtp_timeout + 20)
        timeouts = ua.count(r"no RTP or RTCP for")
        figures: dict[str, Any] = {
            "calls": calls,
            "rtp_timeout": self.args.fault_rtp_timeout,
            "up": up,
            "binding_before": bool(binding_before),
            "reregister_after_kill_s": registered - killed,
            "reregister_after_restart_s": registered - restarted,
            "carried_over_lines": carried,
            "sipp_successful": result.successful,
            "sipp_failed": result.failed,
            "byes": byes,
            "released_after_sipp_s": (released - sipp_done)
            if sipp_done == sipp_done
            else released - time.monotonic(),
            "released": released == released,
            "rtp_timeouts": timeouts,
            "udp_left": ua.sockets()[1] - idle_udp,
            "tracebacks": ua.tracebacks(),
        }
        if sniffer is not None:
            window_end = (registered if registered == registered else restarted) + 2.0
            sent_gaps = sniffer.gaps_between("sent", killed - 1.0, window_end)
            received_gaps = sniffer.gaps_between("received", killed - 1.0, window_end)
            figures["rtp_streams_sent_before_kill"] = sniffer.streams("sent", killed - 0.5)
            figures["rtp_gaps_sent"] = len(sent_gaps)
            figures["rtp_max_gap_sent_ms"] = max(sent_gaps, default=0.0) * 1000
            figures["rtp_gaps_received"] = len(received_gaps)
            sniffer.stop()
        ua.stop()
        kam.stop()
        return figures

    # -- 3. silent flow ----------------------------------------------------------------------
    def silent(self) -> dict[str, Any]:
        rounds = 1 if self.args.quick else 3
        keepalive = 5
        kam = self.kamailio("silent")
        relay = BlackHoleRelay(kam.address("tls")).start()
        self._cleanups.append(relay.stop)
        ua = self.ua(kam, "--keepalive", str(keepalive),
                     "--rtp-timeout", str(self.args.fault_rtp_timeout),
                     port=relay.port)  # fmt: skip
        time.sleep(0.5)
        _, idle_udp = ua.sockets()
        # The far end's BYE comes after every round (each waits up to a keepalive interval
        # for the flow's first pong, then takes at most keepalive + 10 s to detect, plus the
        # re-registration).
        hold_ms = 25000 + 22000 * rounds
        figures: dict[str, Any] = {
            "hold_s": hold_ms / 1000,
            "keepalive": keepalive,
            "rtp_timeout": self.args.fault_rtp_timeout,
            "rounds": [],
        }
        agent = self.sipp(kam, "silent", 1, 1, hold_ms, timeout=hold_ms / 1000 + 60,
                          refresh=True)  # fmt: skip
        agent.start()
        figures["call_up"] = self.established(ua, idle_udp, 1, 20)
        time.sleep(2.0)
        for number in range(1, rounds + 1):
            # A registrar without outbound (Kamailio here: no Require: outbound) gets a pong
            # required only once the flow has answered a ping (RFC 5626 §4.4.1, issue 10
            # item 2): silencing a flow before that would measure nothing.  One mode line per
            # flow says the pong is now required.
            _, armed = wait_for(lambda n=number: ua.count(_PONG_REQUIRED) >= n, 2 * keepalive + 5)
            before = {b.received for b in kam.bindings("alice")}
            silenced = relay.black_hole()

            def closed(since: float = silenced) -> float | None:
                times = [
                    p["client_closed_at"] for p in relay.snapshot()
                    if p["silent"] and p["silenced_at"] == since and p["client_closed_at"]
                ]  # fmt: skip
                return times[0] if times else None

            closed_at, _ = wait_for(closed, keepalive + 30)

            def moved(old: set[Any] = before) -> bool:
                now = {b.received for b in kam.bindings("alice")}
                return bool(now) and now != old

            _, registered = wait_for(moved, 60)
            figures["rounds"].append({
                "pong_required": armed == armed,
                "detect_s": (closed_at - silenced) if closed_at else float("nan"),
                "reregister_after_detect_s": (
                    (registered - closed_at) if closed_at else float("nan")
                ),
            })  # fmt: skip
        sipp_done = wait_for(lambda: not agent.running, hold_ms / 1000 + 30)[1]
        result = agent.stop() if agent.running else agent.collect()
        byes = bye_outcomes(agent.messages)
        released = self.released(ua, idle_udp, self.args.fault_rtp_timeout + 20)
        figures.update({
            "dead_lines": ua.count(r"is dead: no keepalive pong"),
            "carried_over_lines": ua.count(r"call\(s\) carried over to the new flow"),
            "byes": byes,
            "sipp_successful": result.successful,
            "sipp_failed": result.failed,
            "released": released == released,
            "released_after_sipp_s": (
                released - sipp_done if sipp_done == sipp_done else float("nan")
            ),
            "rtp_timeouts": ua.count(r"no RTP or RTCP for"),
            "udp_left": ua.sockets()[1] - idle_udp,
            "tracebacks": ua.tracebacks(),
        })  # fmt: skip
        ua.stop()
        relay.stop()
        kam.stop()
        return figures

    # -- 4. far end vanishing ------------------------------------------------------------------
    def vanish(self) -> dict[str, Any]:
        calls = 3
        timeout = 5
        kam = self.kamailio("vanish")
        ua = self.ua(kam, "--rtp-timeout", str(timeout))
        time.sleep(0.5)
        _, idle_udp = ua.sockets()
        sniffer = RtpSniffer.maybe(ua.rtp_ports)
        agent = self.sipp(kam, "vanish", calls, 10, 60000, timeout=120)
        agent.start()
        up = self.established(ua, idle_udp, calls, 20)
        if sniffer is not None:
            sniffer.track(ua.udp_ports())
        time.sleep(2.0)
        byes_before = len(re.findall(r"REQ BYE .*/tls", kam.log))
        killed = time.monotonic()
        agent._proc.stop(timeout=5, signum=signal.SIGKILL, group=True)
        _, bye_seen = wait_for(
            lambda: len(re.findall(r"REQ BYE .*/tls", kam.log)) - byes_before >= calls,
            timeout + 30,
        )
        released = self.released(ua, idle_udp, timeout + 30)
        last_rtp = sniffer.last("received") if sniffer is not None else killed
        figures = {
            "calls": calls,
            "up": up,
            "rtp_timeout": timeout,
            "byes_seen_by_kamailio": len(re.findall(r"REQ BYE .*/tls", kam.log)) - byes_before,
            "last_rtp_to_bye_s": bye_seen - last_rtp,
            "last_rtp_to_released_s": released - last_rtp,
            "kill_to_last_rtp_s": last_rtp - killed,
            "rtp_timeouts": ua.count(r"no RTP or RTCP for"),
            "udp_left": ua.sockets()[1] - idle_udp,
            "tracebacks": ua.tracebacks(),
            "captured": sniffer is not None,
        }
        if sniffer is not None:
            sniffer.stop()
        ua.stop()
        kam.stop()
        return figures

    # -- 5. SIGTERM with calls up --------------------------------------------------------------
    def sigterm(self) -> dict[str, Any]:
        calls = 50
        kam = self.kamailio("sigterm")
        ua = self.ua(kam)
        time.sleep(0.5)
        _, idle_udp = ua.sockets()
        agent = self.sipp(kam, "sigterm", calls, 50, 60000, timeout=120)
        agent.start()
        up = self.established(ua, idle_udp, calls, 30)
        time.sleep(2.0)
        sent = time.monotonic()
        ua.proc.send_signal(signal.SIGTERM)
        _, exited = wait_for(lambda: ua.proc.poll() is not None, 30)
        code = ua.proc.poll()
        _, sipp_done = wait_for(lambda: not agent.running, 20)
        result = agent.stop() if agent.running else agent.collect()
        byes = bye_outcomes(agent.messages)
        log = ua.log
        figures = {
            "calls": calls,
            "up": up,
            "exit_s": exited - sent,
            "exit_code": code,
            "clean": "Server Shut Down." in log,
            "hangup_line": bool(re.search(rf"hanging up {calls} call\(s\)", log)),
            "bye_not_confirmed_lines": len(re.findall(r"did not confirm BYE", log)),
            "byes_received_by_far_end": byes["received"],
            "byes_answered_200": byes["received_answered_200"],
            "sipp_done": sipp_done == sipp_done,
            "unregistered": not kam.bindings("alice"),
            "tracebacks": log.count("Traceback (most recent call last)"),
            "sipp_successful": result.successful,
            "sipp_failed": result.failed,
        }
        ua.stop()
        kam.stop()
        return figures

    def run(self, names: list[str]) -> None:
        for name in names:
            print(f"== {name}", flush=True)
            started = time.monotonic()
            load_before = os.getloadavg()[0]
            try:
                figures = getattr(self, name)()
            except Exception as exc:
                figures = {"error": f"{type(exc).__name__}: {exc}"[:1500]}
            finally:
                self.cleanup()
            figures["scenario_s"] = time.monotonic() - started
            figures["run"] = (
                f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, 1-min load average "
                f"{load_before:.2f} before / {os.getloadavg()[0]:.2f} after"
            )
            self.results[name] = figures
            print(f"   {figures}", flush=True)


# ------------------------------------------------------------------------------------------
# Report


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    versions = {}
    for name, argv in (("kamailio", ["kamailio", "-v"]), ("sipp", ["sipp", "-v"])):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        text = (out.stdout + out.stderr).strip().splitlines()
        versions[name] = next((t.strip() for t in text if t.strip()), "?")
    return {
        "uname": " ".join(platform.uname()[i] for i in (0, 1, 2, 4)),
        "cpu": f"{cpu}, nproc {os.cpu_count()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **versions,
    }


def _f(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.{digits}f}"
    return str(value)


def render(results: dict[str, dict[str, Any]], info: dict[str, str], command: str) -> str:
    """The section: a header, then one ``### name`` subsection per scenario that ran."""
    lines = [
        SECTION,
        "",
        f"- machine: `{info['uname']}`",
        f"- CPU: {info['cpu']}",
        f"- Python: {info['python']}; {info['kamailio']}; {info['sipp']}",
        "- command: `python bench/faults.py --scenario all` (each subsection says when it ran, "
        "with which command and under what load: the machine is shared with other work)",
        "",
        "Our UA is `twistd -n voip --app echo` registered as alice over TLS with Kamailio; the "
        "far end is SIPp over UDP through Kamailio streaming PCMA RTP in a loop (`rtp_stream`) "
        "until it sends BYE. RSS/fds/UDP sockets from /proc/PID; RTP timestamps from an "
        "AF_PACKET socket on `lo`; 'released' = our UA's UDP sockets back to the idle count. "
        "Figures are reported as measured, including failures.",
        "",
    ]
    for name in SCENARIOS:
        figures = results.get(name)
        if figures is None:
            continue
        lines.extend([f"### {name}", ""])
        lines.append(f"- run: {figures.get('run', '?')}; `{command}`")
        lines.append("")
        if "error" in figures:
            lines.append(f"- did not complete: `{figures['error'][:600]}`")
            lines.append("")
            continue
        lines.extend(_render_one(name, figures))
        note = _reading(name, figures)
        if note:
            lines.extend(["", note, ""])
        lines.append(f"- scenario wall time: {_f(figures['scenario_s'], 0)} s")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _render_one(name: str, f: dict[str, Any]) -> list[str]:
    if name == "soak":
        return [
            f"{f['calls']:,} calls at {f['rate']} cps, {f['hold_ms']} ms each with RTP both ways "
            f"(echo), in {_f(f['elapsed_s'], 0)} s.",
            "",
            "| measure | value |",
            "|---|---:|",
            f"| SIPp successful / failed | {f['successful']:,} / {f['failed']:,} |",
            f"| RSS idle (registered) | {_f(f['rss_idle'])} MB |",
            f"| RSS after 1,000 calls | {_f(f['rss_1k'])} MB |",
            f"| RSS after all calls | {_f(f['rss_end'])} MB |",
            f"| RSS peak during the run | {_f(f['rss_peak'])} MB |",
            f"| open fds idle / after (kinds that changed) | {f['fds_idle']} / {f['fds_end']} "
            f"({f['fd_change']}) |",
            f"| UDP sockets idle / peak / after | {f['udp_idle']} / {f['udp_peak']} / "
            f"{f['udp_end']} |",
            f"| UDP sockets back to idle after SIPp ended | "
            f"{'after ' + _f(f['released_after_s']) + ' s' if f['released'] else 'NO (75 s)'} |",
            f"| our UA's CPU over the run | {_f(f['ua_cpu_s'])} s "
            f"({_f(f['ua_cpu_s'] / max(1, f['successful']) * 1e6, 0)} µs per call) |",
            f"| our UA's run-queue wait (runnable, no core free) | {_f(f['ua_wait_pct'])} % "
            "of the run |",
            f"| highest 1-min load average during the run | {_f(f['load_max'], 2)} |",
            f"| tracebacks in its log | {f['tracebacks']} |",
            *(
                [
                    f"| RTP mid-run (2 s capture, a lower bound): packets/s from / to our UA | "
                    f"{_f(f['rtp_sample']['sent_pps'], 0)} / "
                    f"{_f(f['rtp_sample']['received_pps'], 0)} "
                    f"({f['rtp_sample']['sent_streams']} / "
                    f"{f['rtp_sample']['received_streams']} streams) |",
                    "| same capture: far end's first RTP packet -> our first echo, p50 / p90 | "
                    f"{_f(f['rtp_sample']['first_echo_p50_ms'], 0)} / "
                    f"{_f(f['rtp_sample']['first_echo_p90_ms'], 0)} ms "
                    f"({f['rtp_sample']['first_echo_streams']} streams) |",
                ]
                if f["rtp_sample"]
                else []
            ),
            "",
            "RSS (MB) every 1,000 calls: "
            + ", ".join(f"{n:,}: {_f(mb)}" for n, mb in f["rss_series"]),
            *(
                [
                    "",
                    "SIPp error log entries: "
                    + "; ".join(f"{n} x `{kind}`" for kind, n in f["error_kinds"].items()),
                ]
                if f["error_kinds"]
                else ([f"\nSIPp error log (last lines): `{f['errors']}`"] if f["errors"] else [])
            ),
        ]
    if name == "registrar":
        rows = [
            f"{f['calls']} calls up with RTP ({'all' if f['up'] else 'NOT all'} established), "
            "Kamailio's process group killed with SIGKILL, restarted on the same ports 5 s later; "
            "SIPp answers our target refresh 200 and sends BYE to its Contact ~35 s after each "
            "answer; our UA runs with "
            f"`--rtp-timeout {f['rtp_timeout']}`.",
            "",
            "| measure | value |",
            "|---|---:|",
            f"| re-registered after the kill / after the restart | "
            f"{_f(f['reregister_after_kill_s'])} s / {_f(f['reregister_after_restart_s'])} s |",
            f"| 'call(s) carried over to the new flow' log lines | {f['carried_over_lines']} |",
        ]
        if "rtp_gaps_sent" in f:
            rows += [
                "| RTP streams from our UA just before the kill | "
                f"{f['rtp_streams_sent_before_kill']} |",
                f"| RTP gaps > 200 ms from our UA (kill - 1 s .. re-registered + 2 s) | "
                f"{f['rtp_gaps_sent']} (longest {_f(f['rtp_max_gap_sent_ms'], 0)} ms) |",
                f"| RTP gaps > 200 ms towards our UA in that window | {f['rtp_gaps_received']} |",
            ]
        rows += [
            f"| far end's BYEs sent / answers | {f['byes']['sent']} / "
            f"{codes_text(f['byes']['codes'])} |",
            f"| SIPp calls successful / failed | {f['sipp_successful']} / {f['sipp_failed']} |",
            f"| our UA released the calls (UDP sockets back to idle) | "
            f"{'yes' if f['released'] else 'no'}, {_f(f['released_after_sipp_s'])} s "
            "after SIPp ended |",
            f"| calls our UA ended by the RTP timeout | {f['rtp_timeouts']} |",
            f"| UDP sockets left over idle at the end | {f['udp_left']} |",
            f"| tracebacks | {f['tracebacks']} |",
        ]
        return rows
    if name == "silent":
        rows = [
            f"The relay between our UA and Kamailio goes silent (connection kept open, bytes "
            f"dropped both ways) {len(f['rounds'])} time(s); `--keepalive {f['keepalive']} "
            f"--rtp-timeout {f['rtp_timeout']}`. "
            "A call is up through every round (its RTP flows outside the relay); SIPp answers "
            "each target refresh 200 and sends its BYE to the latest refreshed Contact "
            f"{_f(f['hold_s'], 0)} s after the answer, once the rounds are over.",
            "",
            "Each round silences the flow once it has answered a ping (from then on a missing "
            "pong ends it: Kamailio's REGISTER 2xx has no Require: outbound, RFC 5626 §4.4.1).",
            "",
            "| round | pong required when silenced | detected after (s) | "
            "re-registered after detection (s) |",
            "|---:|---|---:|---:|",
        ]
        for number, r in enumerate(f["rounds"], 1):
            rows.append(
                f"| {number} | {'yes' if r.get('pong_required', True) else 'NO'} | "
                f"{_f(r['detect_s'])} | {_f(r['reregister_after_detect_s'])} |"
            )
        rows += [
            "",
            "| measure | value |",
            "|---|---:|",
            f"| 'flow is dead' log lines | {f['dead_lines']} |",
            f"| 'carried over to the new flow' log lines | {f['carried_over_lines']} |",
            f"| far end's BYE sent / answers | {f['byes']['sent']} / "
            f"{codes_text(f['byes']['codes'])} |",
            f"| our UA released the call | {'yes' if f['released'] else 'no'}, "
            f"{_f(f['released_after_sipp_s'])} s after SIPp ended |",
            f"| calls our UA ended by the RTP timeout | {f['rtp_timeouts']} |",
            f"| UDP sockets left over idle | {f['udp_left']} |",
            f"| tracebacks | {f['tracebacks']} |",
        ]
        return rows
    if name == "vanish":
        return [
            f"{f['calls']} calls up with RTP, then SIPp killed with SIGKILL; our UA runs with "
            f"`--rtp-timeout {f['rtp_timeout']}`.",
            "",
            "| measure | value |",
            "|---|---:|",
            f"| our BYEs seen by Kamailio | {f['byes_seen_by_kamailio']} of {f['calls']} |",
            f"| last RTP packet -> all our BYEs at Kamailio | {_f(f['last_rtp_to_bye_s'], 2)} s |",
            "| last RTP packet -> UDP sockets released | "
            f"{_f(f['last_rtp_to_released_s'], 2)} s |",
            f"| 'no RTP or RTCP' log lines | {f['rtp_timeouts']} |",
            f"| UDP sockets left over idle | {f['udp_left']} |",
            f"| tracebacks | {f['tracebacks']} |",
            *([] if f["captured"] else ["\n(no RTP capture: times are from the kill)"]),
        ]
    if name == "sigterm":
        return [
            f"{f['calls']} calls up with RTP ({'all' if f['up'] else 'NOT all'} established), "
            "then SIGTERM to twistd.",
            "",
            "| measure | value |",
            "|---|---:|",
            f"| SIGTERM -> process exit | {_f(f['exit_s'], 2)} s (status {f['exit_code']}, "
            f"{'clean' if f['clean'] else 'NOT clean'} shutdown) |",
            f"| BYEs received by the far end / answered 200 | {f['byes_received_by_far_end']} / "
            f"{f['byes_answered_200']} of {f['calls']} |",
            f"| 'did not confirm BYE in time' lines | {f['bye_not_confirmed_lines']} |",
            f"| binding removed (un-REGISTER) | {'yes' if f['unregistered'] else 'no'} |",
            f"| tracebacks | {f['tracebacks']} |",
        ]
    return []


def _reading(name: str, f: dict[str, Any]) -> str:
    """One sentence on what the figures mean, only where they show a known failure mode."""
    if name in ("registrar", "silent"):
        codes = f["byes"]["codes"]
        failed = sum(n for code, n in codes.items() if code != "200")
        if not failed:
            return ""
        ended = f["rtp_timeouts"]
        return (
            f"Reading: {failed} of the far end's BYEs never reached our UA (answered "
            f"{codes_text({c: n for c, n in codes.items() if c != '200'})} by Kamailio): they "
            "went to a target of the old flow (the far end answers our target refresh and "
            "takes its Contact, so see SIPp's trace for whether a refresh reached it). Our UA "
            f"ended {ended} of those calls only through the RTP inactivity timeout, after SIPp "
            "gave up and stopped its RTP."
        )
    if name == "soak" and f["ua_wait_pct"] > 20:
        return (
            f"Reading: our UA waited for a core {_f(f['ua_wait_pct'], 0)} % of the run (other "
            "work on the machine): failures and latencies here measure that contention as much "
            "as the code."
        )
    return ""


def _subsections(text: str) -> tuple[str, dict[str, str]]:
    """(header, {scenario: its ``### name`` block}) of a rendered section."""
    parts = re.split(r"^(?=### )", text, flags=re.M)
    blocks = {}
    for part in parts[1:]:
        name = part.split("\n", 1)[0][4:].strip()
        blocks[name] = part.rstrip("\n") + "\n"
    return parts[0].rstrip("\n") + "\n", blocks


def write_section(text: str) -> None:
    """Replace this section's header and the subsections of the scenarios that ran; keep
    the other scenarios' subsections from an earlier run.  Re-reads the file right before."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    found = pattern.search(current)
    header, blocks = _subsections(text)
    if found:
        _, old_blocks = _subsections(found.group(0))
        blocks = {**old_blocks, **blocks}
    body = header + "\n" + "\n".join(blocks[n] for n in SCENARIOS if n in blocks)
    if found:
        updated = current[: found.start()] + body + "\n" + current[found.end() :]
    else:
        updated = current.rstrip("\n") + "\n\n" + body
    RESULTS.write_text(updated.rstrip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scenario", default="all",
                        help=f"comma-separated: {', '.join(SCENARIOS)}, or all")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="1,000 soak calls, 1 silent round")
    parser.add_argument("--soak-calls", type=int, default=None)
    parser.add_argument(
        "--soak-rate",
        type=int,
        default=50,
        help="calls/s (100 needs ~60%% of a core for our UA: more than a shared 2-core "
        "machine guarantees; once behind, calls pile up until the RTP range is exhausted)",
    )
    parser.add_argument("--soak-hold-ms", type=int, default=1000)
    parser.add_argument("--fault-rtp-timeout", type=int, default=10,
                        help="our UA's --rtp-timeout (registrar, silent scenarios)")  # fmt: skip
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--no-capture", action="store_true", help="no RTP capture (it costs CPU; needs root)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs (working directory)")
    args = parser.parse_args()
    if args.soak_calls is None:
        args.soak_calls = 1000 if args.quick else 10_000
    RtpSniffer.enabled = not args.no_capture
    names = list(SCENARIOS) if args.scenario == "all" else args.scenario.split(",")
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(unknown)}")
    missing = [n for n in ("kamailio", "sipp", "sox") if shutil.which(n) is None]
    if missing or not os.path.exists(TWISTD):
        sys.exit(f"not installed: {', '.join(missing) or TWISTD}")
    bench = Bench(args)
    try:
        bench.run(names)
    finally:
        bench.cleanup()
        if args.keep:
            print(f"kept {bench.workdir}", flush=True)
        else:
            shutil.rmtree(bench.workdir, ignore_errors=True)
    info = machine()
    command = "python bench/faults.py " + " ".join(sys.argv[1:])
    text = render(bench.results, info, command.strip())
    print()
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
