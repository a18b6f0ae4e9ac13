"""RSS per idle inbound connection of ``twistd voip --listen``, and that they are closed.

Run ``python bench/idle_connections.py`` from the repository root (under a minute).

1. ``twistd -n voip --listen tcp:P1 --listen tls:P2`` (the embedded self-signed
   certificate) starts with short ``--request-timeout``/``--idle-timeout`` (issue 14
   finding 5: 4,932 idle TLS connections used to be held for ever, ~39 KB each).
2. ``--connections`` sockets (half TCP, half TLS with the handshake done) are opened to
   it; each sends one OPTIONS and reads its 200, then stays silent (an idle SIP peer).
   ``VmRSS`` of twistd before and after, divided by the number of connections, is the
   per-connection figure (and ``Pss``/private to leave shared pages out).
3. The bench then waits until the service has closed every connection (each socket sees
   EOF or a reset) and reports when, relative to ``--idle-timeout``; a connection still
   open after twice the timeout is a failure.

Results are printed and written to the "Idle connections" section of
``bench/RESULTS.md`` (``--no-write`` to skip).  Loopback only; the one process started
here is stopped here by its handle; every wait has a timeout.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## Idle connections"
MAX_CONNECTIONS = 4000

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from service_memory import rss_kb, smaps_kb  # noqa: E402

from tests.integration.peers import free_ports  # noqa: E402


def options(port: int, n: int) -> bytes:
    return (
        f"OPTIONS sip:voip@127.0.0.1:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bKidle{n};rport\r\n"
        "Max-Forwards: 70\r\nFrom: <sip:bench@127.0.0.1>;tag=b\r\n"
        f"To: <sip:voip@127.0.0.1>\r\nCall-ID: idle-{n}@bench\r\nCSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def wait_for_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


def open_idle(kind: str, port: int, n: int, context: ssl.SSLContext) -> socket.socket:
    """One connection that sent an OPTIONS, read its 200 and now stays silent."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock: socket.socket = context.wrap_socket(raw) if kind == "tls" else raw
    sock.sendall(options(port, n))
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("closed before answering OPTIONS")
        reply += chunk
    if not reply.startswith(b"SIP/2.0 200"):
        raise RuntimeError(f"OPTIONS answered {reply[:40]!r}")
    sock.setblocking(False)
    return sock


def wait_closed(socks: list[socket.socket], started: float, limit: float) -> list[float]:
    """Seconds after *started* at which each socket saw the service close it."""
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    closed: list[float] = []
    while len(closed) < len(socks) and time.monotonic() - started < limit:
        for key, _ in selector.select(timeout=0.5):
            sock = key.fileobj
            try:
                data = sock.recv(4096)  # type: ignore[union-attr]
            except ssl.SSLWantReadError:
                continue
            except (ConnectionError, ssl.SSLError, OSError):
                data = b""
            if not data:
                closed.append(time.monotonic() - started)
                selector.unregister(sock)
    selector.close()
    return closed


def measure(connections: int, idle_timeout: float, workdir: Path) -> dict[str, float]:
    twistd = Path(sys.executable).with_name("twistd")
    tcp_port, tls_port = free_ports(2)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    argv = [
        str(twistd), "-n", "--pidfile=", "voip", "--state-dir", str(workdir / "state"),
        "--listen", f"tcp:{tcp_port}:interface=127.0.0.1",
        "--listen", f"tls:{tls_port}:interface=127.0.0.1",
        "--max-connections", str(connections),
        "--request-timeout", str(idle_timeout), "--idle-timeout", str(idle_timeout),
    ]  # fmt: skip
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the embedded self-signed certificate
    with open(workdir / "twistd.log", "wb") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(workdir),
            start_new_session=True,
        )  # fmt: skip
        socks: list[socket.socket] = []
        try:
            deadline = time.monotonic() + 30
            wait_for_port(tcp_port, deadline)
            wait_for_port(tls_port, deadline)
            # One connection of each kind first: TLS and SIP code paths loaded and warm.
            for warm in (open_idle("tcp", tcp_port, -1, context),
                         open_idle("tls", tls_port, -2, context)):  # fmt: skip
                warm.close()
            time.sleep(1)
            before = rss_kb(proc.pid)
            pss_before, private_before = smaps_kb(proc.pid)
            opened = time.monotonic()
            for n in range(connections):
                kind, port = ("tls", tls_port) if n % 2 else ("tcp", tcp_port)
                socks.append(open_idle(kind, port, n, context))
            last_request = time.monotonic()
            time.sleep(1)
            after = rss_kb(proc.pid)
            pss_after, private_after = smaps_kb(proc.pid)
            closed = wait_closed(socks, last_request, 2 * idle_timeout + 10)
            time.sleep(1)
            end = rss_kb(proc.pid)
        finally:
            for sock in socks:
                sock.close()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return {
        "connections": connections,
        "open_s": last_request - opened,
        "rss_before_kb": before,
        "rss_after_kb": after,
        "rss_end_kb": end,
        "per_conn_kb": (after - before) / connections,
        "pss_per_conn_kb": (pss_after - pss_before) / connections,
        "private_per_conn_kb": (private_after - private_before) / connections,
        "closed": len(closed),
        "first_close_s": min(closed) if closed else float("nan"),
        "last_close_s": max(closed) if closed else float("nan"),
        "idle_timeout": idle_timeout,
    }


def report(r: dict[str, float]) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = platform.processor() or platform.machine()
    try:
        model = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
        cpu = model.group(1) if model else cpu
    except OSError:
        pass
    n = int(r["connections"])
    return "\n".join([
        SECTION,
        "",
        f"- date: {now}; machine: {cpu}, {os.cpu_count()} cores (shared with other jobs), "
        f"Python {platform.python_version()}, Linux {platform.release()}",
        "- method: `python bench/idle_connections.py`: `twistd -n voip --listen tcp:P1 "
        "--listen tls:P2` (embedded certificate); half the connections TCP, half TLS "
        "(handshake done), each sends one OPTIONS, reads the 200 and goes silent; VmRSS "
        "of the twistd process before and after opening them (issue 14 finding 5).",
        "",
        "| connections | opened in | RSS before | RSS with them | per connection (RSS / PSS "
        "/ private) | closed by the service | when (after the last request) | RSS after |",
        "|---|---|---|---|---|---|---|---|",
        f"| {n} | {r['open_s']:.1f} s | {r['rss_before_kb'] / 1024:.1f} MiB | "
        f"{r['rss_after_kb'] / 1024:.1f} MiB | {r['per_conn_kb']:.1f} / "
        f"{r['pss_per_conn_kb']:.1f} / {r['private_per_conn_kb']:.1f} KiB | "
        f"{int(r['closed'])} of {n} | {r['first_close_s']:.1f}-{r['last_close_s']:.1f} s "
        f"(`--idle-timeout {r['idle_timeout']:g}`) | {r['rss_end_kb'] / 1024:.1f} MiB |",
        "",
        "Before issue 14 nothing closed an idle connection (4,932 TLS connections held for "
        "200 s at about 39 KB each).  Now `--idle-timeout` (default 120 s) closes one that "
        "carries no call and no transaction, `--request-timeout` (30 s) one that never "
        "sent a request, `--handshake-timeout` (10 s) a TLS handshake that does not "
        "finish, and `--max-connections` (1000 per listener) caps them.  The RSS after "
        "closing stays near the peak: CPython keeps freed memory in its arenas for reuse.",
    ])


def write_section(text: str) -> None:
    """Replace (or append) our section of RESULTS.md, leaving every other section as it is."""
    current = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(current):
        updated = pattern.sub(lambda _: text + "\n", current, count=1)
    else:
        updated = current.rstrip("\n") + "\n\n" + text
    RESULTS.write_text(updated.rstrip("\n") + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--connections", type=int, default=2000,
                        help=f"idle connections to open (at most {MAX_CONNECTIONS})")
    parser.add_argument("--idle-timeout", type=float, default=10.0,
                        help="the service's --idle-timeout/--request-timeout for the run")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    if not 2 <= args.connections <= MAX_CONNECTIONS:
        parser.error(f"--connections must be between 2 and {MAX_CONNECTIONS}")
    with tempfile.TemporaryDirectory(prefix="idle-bench-") as tmp:
        result = measure(args.connections, args.idle_timeout, Path(tmp))
    text = report(result)
    print(text)
    if not args.no_write:
        write_section(text)
    if result["closed"] < result["connections"]:
        sys.exit(f"{result['connections'] - result['closed']} connection(s) never closed")


if __name__ == "__main__":
    main()
