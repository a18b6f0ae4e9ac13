"""Real SIP peers on 127.0.0.1 for integration tests: Kamailio, SIPp, baresip, a socat TLS relay.

Plain synchronous Python so trial and pytest tests can use it from ``setUp``/``addCleanup``:
every ``start()`` blocks until the peer is ready (bounded by a timeout) and every ``stop()``
signals only the process this module started, by PID (SIGTERM, then SIGKILL to that process's
own session group when it does not exit).  Processes still alive at interpreter exit are
stopped by an ``atexit`` hook.  All ports are chosen at run time.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from twisted.trial.unittest import FailTest

from tests.integration.certs import PKI, CertPair, get_pki

HERE = Path(__file__).resolve().parent
SIPP_DIR = HERE / "sipp"
KAMAILIO_TEMPLATE = HERE / "kamailio.cfg.tmpl"
KAMAILIO_MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules/"
SIPP_PCAP_DIR = Path("/usr/share/sip-tester")
DTMF_PCAP = SIPP_PCAP_DIR / "dtmf_2833_1.pcap"
G711A_PCAP = SIPP_PCAP_DIR / "g711a.pcap"
LOOPBACK = "127.0.0.1"


class PeerError(RuntimeError):
    """A peer failed to start, answer or stop in time."""


def require(*programs: str) -> None:
    """Fail, never skip, when a program the integration tests start is not on PATH."""
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        raise FailTest(
            f"not installed: {', '.join(missing)}; run `bash scripts/install-deps.sh`"
            " (the integration tests need the real peers and never skip)"
        )


# Ports come from below the kernel's ephemeral range (32768-60999 by default) and above the
# default media range (10000-20000), so they do not collide with the source ports of other
# programs' outgoing connections or with bind-to-0 listeners on this shared machine.
PORT_RANGE = (20000, 32000)
_rng = random.Random()


def _port_in_use(port: int, kind: str) -> bool:
    sock_type = socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, sock_type) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return True
        return False


def _pick(check, what: str) -> int:
    for _ in range(500):
        port = _rng.randrange(*PORT_RANGE)
        if check(port):
            return port
    raise PeerError(f"no free {what} in {PORT_RANGE}")


def free_port(kind: str = "tcp") -> int:
    """A loopback port currently free for ``kind`` ("tcp" or "udp"), picked at run time.

    Chosen at random in PORT_RANGE and checked by binding it (then released).
    """
    if kind not in ("tcp", "udp"):
        raise ValueError("kind must be 'tcp' or 'udp'")
    return _pick(lambda p: not _port_in_use(p, kind), f"{kind} port")


def free_ports(count: int, kind: str = "tcp") -> list[int]:
    """``count`` distinct free ports of ``kind``."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port(kind)
        if port not in ports:
            ports.append(port)
    return ports


def free_port_pair() -> int:
    """Port P free for UDP and TCP with P+1 free for TCP: baresip's ``sip_listen`` (TLS: P+1)."""
    return _pick(
        lambda p: (
            not (_port_in_use(p, "udp") or _port_in_use(p, "tcp") or _port_in_use(p + 1, "tcp"))
        ),
        "SIP port pair",
    )


def _free_even_udp_port() -> int:
    """An even UDP port P with P+1..P+3 free too: SIPp's ``-mp`` binds audio RTP/RTCP at
    P, P+1 and video RTP/RTCP at P+2, P+3 (RFC 3550 §11 pairs), and fails the whole run
    ("Unable to bind video RTP socket") if any of the four is taken."""
    return _pick(
        lambda p: p % 2 == 0 and not any(_port_in_use(p + i, "udp") for i in range(4)),
        "even UDP port quadruple",
    )


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value (returned) or raise PeerError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise PeerError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def tcp_open(port: int, host: str = LOOPBACK) -> bool:
    """Whether a TCP connect to host:port succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Process tracking


_live: set[ManagedProcess] = set()
_live_lock = threading.Lock()


class ManagedProcess:
    """One child process started by this module, with its output captured to a log file.

    The child gets its own session (``start_new_session``) so the SIGKILL fallback can reach
    children it forked without touching anything else.
    """

    def __init__(self, argv: list[str], log_path: str | os.PathLike, *, cwd=None, env=None):
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.cwd = cwd
        self.env = env
        self.popen: subprocess.Popen | None = None
        self._log_file = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self) -> None:
        if self.running:
            return
        # Stays open for the child's lifetime; closed in _forget().
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115
        self.popen = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env=self.env,
            start_new_session=True,
        )
        with _live_lock:
            _live.add(self)

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def wait(self, timeout: float) -> int:
        """Wait for exit; raise PeerError (process left running) on timeout."""
        assert self.popen is not None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise PeerError(
                f"{self.argv[0]} (pid {self.pid}) still running after {timeout}s"
            ) from None
        finally:
            if self.popen.poll() is not None:
                self._forget()

    def send_signal(self, signum: int) -> None:
        if self.running:
            os.kill(self.popen.pid, signum)

    def stop(
        self, timeout: float = 5.0, signum: int = signal.SIGTERM, group: bool = False
    ) -> int | None:
        """Signal the PID we started, wait, then SIGKILL its own process group; idempotent.

        ``group=True`` sends ``signum`` to the child's own process group (its session, made at
        start) rather than the PID alone: for a forking server such as ``socat fork``.
        """
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            try:
                if group:
                    os.killpg(self.popen.pid, signum)
                else:
                    os.kill(self.popen.pid, signum)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
            except ProcessLookupError:
                pass
        self._forget()
        return self.popen.returncode

    def _forget(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        with _live_lock:
            _live.discard(self)

    def read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


@atexit.register
def stop_all() -> None:
    """Stop every process this module started that is still running."""
    with _live_lock:
        procs = list(_live)
    for proc in procs:
        proc.stop(timeout=3)


class _TempDir:
    """A working directory: the caller's (kept) or a fresh temporary one (removed by cleanup)."""

    def __init__(self, tmpdir: str | os.PathLike | None, prefix: str):
        if tmpdir is None:
            self.path = Path(tempfile.mkdtemp(prefix=prefix))
            self.owned = True
        else:
            self.path = Path(tmpdir)
            self.path.mkdir(parents=True, exist_ok=True)
            self.owned = False

    def cleanup(self) -> None:
        if self.owned:
            shutil.rmtree(self.path, ignore_errors=True)


def _resolve_cert(cert: CertPair | str | None, pki: PKI) -> CertPair:
    if cert is None or cert == "server":
        return pki.server
    if isinstance(cert, CertPair):
        return cert
    named = {
        "wrong_host": pki.wrong_host,
        "unknown_ca": pki.unknown_ca,
        "sip_domain": pki.sip_domain,
        "srv_target": pki.srv_target,
    }
    if cert not in named:
        raise ValueError(f"cert must be a CertPair or 'server', {', '.join(map(repr, named))}")
    return named[cert]


# --------------------------------------------------------------------------------------------
# Kamailio


@dataclass(frozen=True)
class Binding:
    """One registered contact as Kamailio's ``ul.dump`` reports it."""

    aor: str
    contact: str
    expires: int
    received: str | None = None
    socket: str | None = None
    user_agent: str | None = None
    call_id: str | None = None
    cseq: int | None = None
    q: float | None = None
    instance: str | None = None
    reg_id: int | None = None
    raw: dict = field(default_factory=dict, compare=False, repr=False)


_KAM_USER_RE = re.compile(r"^[A-Za-z0-9._~+-]+$")


class Kamailio:
    """Kamailio 5.6 as registrar + stateful proxy on 127.0.0.1 (TLS, TCP and UDP listeners).

    REGISTER always needs digest auth (401, RFC 3261 §22.2) against ``users``; INVITEs to
    registered users are relayed from anyone unless ``auth_invite`` asks for 407 proxy auth
    (RFC 3261 §22.3) from a configured user.  A UA that registered over its own TCP/TLS
    connection gets requests on that connection (nathelper ``fix_nated_register`` +
    ``set_forward_no_connect``; usrloc ``handle_lost_tcp`` drops the binding when it dies).
    ``shm_mb`` is its shared memory (``-m``): the tests' 64 MB runs short near 400 calls/s.
    ``crlf_ping=False`` makes it ignore CRLF keepalive pings (``tcp_crlf_ping=no``, a
    registrar without RFC 5626 outbound); ``challenge_bye=True`` answers an in-dialog BYE
    from a configured user without credentials with 407 (RFC 3261 §22.3).
    ``tcp_on_udp_port=True`` puts the TCP listener on the UDP listener's port.
    ``reject=(status, retry_after)`` answers every initial request of ``reject_methods``
    with that status (503 or 408; ``Retry-After`` when not None): a failing server for the
    RFC 3263 §4.3 failover tests.
    """

    def __init__(
        self,
        tmpdir: str | os.PathLike | None = None,
        users: dict[str, str] | None = None,
        *,
        algorithm: str = "MD5",
        qop: str = "auth",
        cert: CertPair | str | None = None,
        realm: str = LOOPBACK,
        min_expires: int = 10,
        max_expires: int = 3600,
        default_expires: int = 3600,
        max_contacts: int = 0,
        nonce_expire: int = 300,
        auth_invite: bool = False,
        invite_timeout: float = 30.0,
        debug: int = 2,
        pki: PKI | None = None,
        shm_mb: int = 64,
        crlf_ping: bool = True,
        challenge_bye: bool = False,
        tcp_on_udp_port: bool = False,
        reject: tuple[int, int | None] | None = None,
        reject_methods: tuple[str, ...] = ("REGISTER", "INVITE"),
    ):
        if algorithm not in ("MD5", "SHA-256"):
            raise ValueError("Kamailio 5.6 supports algorithm MD5 or SHA-256")
        if qop not in ("auth", "auth-int", ""):
            raise ValueError("qop must be 'auth', 'auth-int' or ''")
        self.users = dict(users or {"alice": "secret", "bob": "secret"})
        for name, password in self.users.items():
            if not _KAM_USER_RE.match(name) or '"' in password or "\\" in password:
                raise ValueError("user names must be token characters; no quotes in passwords")
        self.pki = pki or get_pki()
        self.cert = _resolve_cert(cert, self.pki)
        self.ca_cert = self.pki.ca.cert
        self.algorithm = algorithm
        self.qop = qop
        self.realm = realm
        self.shm_mb = shm_mb
        self.host = LOOPBACK
        self._dir = _TempDir(tmpdir, "kamailio-")
        self.dir = self._dir.path
        tls, tcp = free_ports(2, "tcp")
        self.tls_port, self.tcp_port = tls, tcp
        self.udp_port = free_port("udp")
        if tcp_on_udp_port:
            # One port for UDP and TCP, as most servers listen: where RFC 3261 §18.1.1 sends
            # a large request ("the same destination" over TCP).
            self.udp_port = self.tcp_port = _pick(
                lambda p: p != tls and not (_port_in_use(p, "udp") or _port_in_use(p, "tcp")),
                "port free for UDP and TCP",
            )
        self.cfg_path = self.dir / "kamailio.cfg"
        self.tls_cfg_path = self.dir / "tls.cfg"
        self.ctl_socket = self.dir / "ctl.sock"
        self.log_path = self.dir / "kamailio.log"
        self._options = dict(
            min_expires=min_expires,
            max_expires=max_expires,
            default_expires=default_expires,
            max_contacts=max_contacts,
            nonce_expire=nonce_expire,
            auth_invite=auth_invite,
            invite_timeout=invite_timeout,
            debug=debug,
            crlf_ping=crlf_ping,
            challenge_bye=challenge_bye,
            reject=reject,
            reject_methods=reject_methods,
        )
        self._proc: ManagedProcess | None = None
        self._started_once = False
        self._render()

    def __repr__(self) -> str:
        return f"<Kamailio tls={self.tls_port} tcp={self.tcp_port} udp={self.udp_port}>"

    # -- configuration
    def _render(self) -> None:
        o = self._options
        flags = {"auth": 1, "auth-int": 2, "": 0}[self.qop]
        users = "\n".join(f'\t$sht(users=>{u}) = "{p}";' for u, p in self.users.items())
        if o["auth_invite"]:
            invite_auth = (
                "\t$var(pw) = $sht(users=>$au);\n"
                f'\tif (!pv_proxy_authenticate("{self.realm}", "$var(pw)", "0")) {{\n'
                f'\t\tproxy_challenge("{self.realm}", "{flags}");\n'
                "\t\texit;\n\t}\n"
                "\tif ($au != $fU) {\n"
                '\t\tsl_send_reply("403", "Forbidden auth ID");\n\t\texit;\n\t}\n'
                "\tconsume_credentials();"
            )
        else:
            invite_auth = "\treturn;"
        bye_auth = ""
        if o["challenge_bye"]:
            # RFC 3261 §22.3: an in-dialog BYE from a configured user must carry credentials
            # for our realm (407, like carriers that challenge BYE to stop toll fraud).
            bye_auth = (
                '\t\tif (is_method("BYE") && $sht(users=>$fU) != $null) {\n'
                "\t\t\t$var(pw) = $sht(users=>$au);\n"
                f'\t\t\tif (!pv_proxy_authenticate("{self.realm}", "$var(pw)", "0")) {{\n'
                '\t\t\t\txlog("L_INFO", "BYE challenged\\n");\n'
                f'\t\t\t\tproxy_challenge("{self.realm}", "{flags}");\n'
                "\t\t\t\texit;\n\t\t\t}\n"
                '\t\t\txlog("L_INFO", "BYE authenticated\\n");\n'
                "\t\t\tconsume_credentials();\n\t\t}"
            )
        reject = ""
        if o["reject"] is not None:
            status, retry_after = o["reject"]
            reason = {503: "Service Unavailable", 408: "Request Timeout"}[status]
            methods = "|".join(o["reject_methods"])
            reject = f'\tif (!has_totag() && is_method("{methods}")) {{\n'
            if retry_after is not None:
                reject += f'\t\tappend_to_reply("Retry-After: {int(retry_after)}\\r\\n");\n'
            reject += f'\t\tsl_send_reply("{status}", "{reason}");\n\t\texit;\n\t}}'
        values = {
            "DEBUG": str(o["debug"]),
            "TLS_PORT": str(self.tls_port),
            "TCP_PORT": str(self.tcp_port),
            "UDP_PORT": str(self.udp_port),
            "MODULE_PATH": KAMAILIO_MODULES,
            "TLS_CFG": str(self.tls_cfg_path),
            "CTL_SOCKET": str(self.ctl_socket),
            "FR_INV_TIMER": str(int(o["invite_timeout"] * 1000)),
            "MIN_EXPIRES": str(o["min_expires"]),
            "MAX_EXPIRES": str(o["max_expires"]),
            "DEFAULT_EXPIRES": str(o["default_expires"]),
            "MAX_CONTACTS": str(o["max_contacts"]),
            "ALGORITHM": self.algorithm,
            "QOP": self.qop,
            "NONCE_EXPIRE": str(o["nonce_expire"]),
            "NONCE_SECRET": secrets.token_hex(16),
            "USERS": users,
            "REALM": self.realm,
            "CHALLENGE_FLAGS": str(flags),
            "CHALLENGE_FLAGS_STALE": str(flags | 16),
            "INVITE_AUTH": invite_auth,
            "BYE_AUTH": bye_auth,
            "TCP_CRLF_PING": "yes" if o["crlf_ping"] else "no",
            "REJECT": reject,
        }
        text = KAMAILIO_TEMPLATE.read_text()
        for key, value in values.items():
            text = text.replace(f"@@{key}@@", value)
        leftover = re.search(r"@@[A-Z_]+@@", text)
        if leftover:
            raise PeerError(f"unrendered placeholder {leftover.group(0)} in kamailio template")
        fd = os.open(self.cfg_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.tls_cfg_path.write_text(
            "[server:default]\n"
            "method = TLSv1.2+\n"
            "verify_certificate = no\n"
            "require_certificate = no\n"
            f"private_key = {self.cert.key}\n"
            f"certificate = {self.cert.cert}\n"
            f"ca_list = {self.ca_cert}\n"
            "\n[client:default]\n"
            "method = TLSv1.2+\n"
            "verify_certificate = no\n"
            "require_certificate = no\n"
        )

    # -- addresses
    def address(self, transport: str = "tls") -> tuple[str, int]:
        """(host, port) of the listener for ``transport`` ("tls", "tcp" or "udp")."""
        ports = {"tls": self.tls_port, "tcp": self.tcp_port, "udp": self.udp_port}
        return (self.host, ports[transport.lower()])

    def uri(self, user: str | None = None, transport: str = "tls") -> str:
        """``sip:[user@]127.0.0.1:PORT;transport=X`` for the listener of ``transport``."""
        host, port = self.address(transport)
        userpart = f"{user}@" if user else ""
        return f"sip:{userpart}{host}:{port};transport={transport.lower()}"

    def baresip_account(self, user: str, transport: str = "tls", **params: str) -> str:
        """An accounts line for baresip registering ``user`` here over ``transport``."""
        host, port = self.address(transport)
        line = f"<sip:{user}@{host}:{port};transport={transport.lower()}>"
        line += f";auth_pass={self.users[user]}"
        for key, value in params.items():
            line += f";{key}={value}" if value is not None else f";{key}"
        return line

    # -- lifecycle
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self, timeout: float = 10.0) -> Kamailio:
        """Start ``kamailio -DD -E`` in the foreground; return once all listeners answer.

        On the first start only, a port taken between choosing and binding makes it pick
        fresh ports and try again (up to 3 attempts); later starts keep the ports.
        """
        if self.running:
            return self
        for attempt in range(3):
            log_offset = len(self.log)
            try:
                return self._start_once(timeout)
            except PeerError:
                taken = "Address already in use" in self.log[log_offset:]
                if self._started_once or not taken or attempt == 2:
                    raise
                tls, tcp = free_ports(2, "tcp")
                self.tls_port, self.tcp_port = tls, tcp
                self.udp_port = free_port("udp")
                self._render()
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> Kamailio:
        check = subprocess.run(
            ["kamailio", "-c", "-f", str(self.cfg_path)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check.returncode != 0:
            raise PeerError("kamailio config check failed:\n" + check.stdout + check.stderr)
        if self.ctl_socket.exists():
            self.ctl_socket.unlink()
        self._proc = ManagedProcess(
            ["kamailio", "-DD", "-E", "-m", str(self.shm_mb), "-M", "8", "-f", self.cfg_path],
            self.log_path,
            cwd=self.dir,
        )
        self._proc.start()

        def ready():
            if not self._proc.running:
                raise PeerError("kamailio exited during start:\n" + self.log[-3000:])
            return self.ctl_socket.exists() and tcp_open(self.tcp_port) and tcp_open(self.tls_port)

        try:
            wait_until(ready, timeout, 0.1, "kamailio listeners")
            wait_until(self._rpc_ok, timeout, 0.1, "kamailio ctl socket")
        except BaseException:
            self.stop()
            raise
        self._started_once = True
        return self

    def _rpc_ok(self) -> bool:
        try:
            return self.rpc("core.version").returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the kamailio we started (SIGKILL its group after ``timeout``)."""
        if self._proc is not None:
            self._proc.stop(timeout)

    def kill(self, timeout: float = 5.0) -> None:
        """Crash it, as ``kill -9`` would: SIGKILL the kamailio we started and every process
        it forked (its own process group, made at start, so nothing else is touched), then
        wait until its listeners are gone.  Nothing is flushed: usrloc and tm state are lost."""
        proc = self._proc
        if proc is None or not proc.running:
            return
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout)
        wait_until(
            lambda: not tcp_open(self.tls_port) and not tcp_open(self.tcp_port),
            timeout, 0.05, "kamailio's listeners to close",
        )

    def restart(self, timeout: float = 10.0) -> Kamailio:
        """Stop and start again on the same ports (all bindings are lost: usrloc is in memory)."""
        self.stop()
        return self.start(timeout)

    def cleanup(self) -> None:
        """Stop and remove the working directory if this object created it."""
        self.stop()
        self._dir.cleanup()

    @property
    def log(self) -> str:
        """Everything kamailio wrote to stdout/stderr so far (all runs)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match:
        """Wait until the regex ``pattern`` matches the log; return the match."""
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.log), timeout, 0.1, f"kamailio log /{pattern}/")

    # -- RPC
    def rpc(self, *command: str, timeout: float = 5.0) -> subprocess.CompletedProcess:
        """Run ``kamcmd -s unix:<ctl> <command...>`` and return the completed process."""
        return subprocess.run(
            ["kamcmd", "-s", f"unix:{self.ctl_socket}", *command],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def bindings(self, aor: str | None = None) -> list[Binding]:
        """Registered contacts (from ``ul.dump``), all or for one AOR.

        ``aor`` may be a user ("alice") or a SIP URI ("sip:alice@127.0.0.1"); usrloc runs without
        ``use_domain``, so only the user part is compared.
        """
        result = self.rpc("ul.dump")
        if result.returncode != 0:
            raise PeerError(f"kamcmd ul.dump failed: {result.stderr.strip()}")
        found = parse_ul_dump(result.stdout)
        if aor is None:
            return found
        user = _aor_user(aor)
        return [b for b in found if _aor_user(b.aor) == user]

    def wait_for_bindings(self, aor: str, count: int = 1, timeout: float = 10.0) -> list[Binding]:
        """Wait until ``aor`` has at least ``count`` bindings (``count=0``: exactly none)."""

        def check():
            found = self.bindings(aor)
            if count == 0:
                return [None] if not found else None
            return found if len(found) >= count else None

        found = wait_until(check, timeout, 0.1, f"{count} binding(s) for {aor}")
        return [] if count == 0 else found


def _aor_user(aor: str) -> str:
    aor = aor.strip().strip("<>")
    for scheme in ("sips:", "sip:"):
        if aor.startswith(scheme):
            aor = aor[len(scheme) :]
    return aor.split("@", 1)[0] if "@" in aor else aor


def parse_ul_dump(text: str) -> list[Binding]:
    """Parse ``kamcmd ul.dump`` output into Bindings.

    kamcmd prints nested structs as ``Key: {`` ... ``}`` with one ``Key: value`` per line;
    each ``Contact: {`` block belongs to the most recent ``AoR:``.
    """
    bindings: list[Binding] = []
    aor: str | None = None
    current: dict | None = None

    def flush():
        if current is not None and aor is not None and "Address" in current:
            bindings.append(_binding_from(aor, current))

    for line in text.splitlines():
        stripped = line.strip()
        if ":" not in stripped:
            continue
        key, _, value = stripped.partition(":")
        key, value = key.strip(), value.strip()
        if value == "{":
            value = ""
        if key.upper() == "AOR":
            flush()
            current = None
            aor = value
        elif key == "Contact" and not value:
            flush()
            current = {}
        elif current is not None:
            current.setdefault(key, value)
    flush()
    return bindings


def _opt_int(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "", "[not set]") else None
    except ValueError:
        return None


def _opt_str(value: str | None) -> str | None:
    return None if value in (None, "", "[not set]") else value


def _binding_from(aor: str, d: dict) -> Binding:
    expires_raw = d.get("Expires", "0")
    expires = -1 if expires_raw == "permanent" else (_opt_int(expires_raw) or 0)
    q = d.get("Q")
    return Binding(
        aor=aor,
        contact=d["Address"],
        expires=expires,
        received=_opt_str(d.get("Received")),
        socket=_opt_str(d.get("Socket")),
        user_agent=_opt_str(d.get("User-Agent")),
        call_id=_opt_str(d.get("Call-ID")),
        cseq=_opt_int(d.get("CSeq")),
        q=float(q) if q not in (None, "", "-1") else None,
        instance=_opt_str(d.get("Instance")),
        reg_id=_opt_int(d.get("Reg-Id")),
        raw=dict(d),
    )


# --------------------------------------------------------------------------------------------
# TLS relay (SIPp has no TLS)


class TlsRelay:
    """``socat`` TCP listener on 127.0.0.1 relaying each connection to a TLS server.

    The TLS side verifies the server against ``cafile`` and ``commonname`` (socat's default
    ``verify=1``), so a relay in front of a Kamailio serving a bad certificate refuses to carry
    traffic.  One TLS connection is opened per accepted TCP connection (``fork``).
    """

    def __init__(
        self,
        target_port: int,
        *,
        target_host: str = LOOPBACK,
        cafile: str | None = None,
        commonname: str = "localhost",
        listen_port: int | None = None,
        tmpdir: str | os.PathLike | None = None,
    ):
        self.target = (target_host, target_port)
        self.cafile = cafile or get_pki().ca.cert
        self.commonname = commonname
        self.port = listen_port or free_port("tcp")
        self.host = LOOPBACK
        self._dir = _TempDir(tmpdir, "tlsrelay-")
        self.log_path = self._dir.path / f"socat-{self.port}.log"
        self._proc: ManagedProcess | None = None

    @classmethod
    def to_kamailio(cls, kamailio: Kamailio, **kwargs) -> TlsRelay:
        """A relay to ``kamailio``'s TLS listener, trusting the test CA."""
        kwargs.setdefault("cafile", kamailio.ca_cert)
        kwargs.setdefault("tmpdir", kamailio.dir)
        return cls(kamailio.tls_port, **kwargs)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def start(self, timeout: float = 10.0) -> TlsRelay:
        if self._proc is not None and self._proc.running:
            return self
        host, port = self.target
        self._proc = ManagedProcess(
            [
                "socat",
                "-d",
                "-d",
                f"TCP-LISTEN:{self.port},bind={self.host},fork,reuseaddr,nodelay",
                f"OPENSSL:{host}:{port},cafile={self.cafile},commonname={self.commonname},verify=1,nodelay",
            ],
            self.log_path,
        )
        self._proc.start()
        try:
            wait_until(lambda: self._listening() or self._died(), timeout, 0.05, "socat listener")
            if not self._proc.running:
                raise PeerError("socat exited: " + self.log[-2000:])
        except BaseException:
            self.stop()
            raise
        return self

    def _listening(self) -> bool:
        return "listening on" in self.log

    def _died(self) -> bool:
        return not self._proc.running

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the listener and the per-connection children it forked (its own group)."""
        if self._proc is not None:
            self._proc.stop(timeout, group=True)

    def cleanup(self) -> None:
        self.stop()
        self._dir.cleanup()

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


# --------------------------------------------------------------------------------------------
# SIPp


SIPP_BUILTINS = ("uac", "uas", "regexp", "branchc", "branchs", "uac_pcap")


@dataclass
class SippResult:
    """Outcome of one SIPp run (from its exit status and ``-trace_stat`` CSV)."""

    returncode: int | None
    successful: int
    failed: int
    stats: dict[str, str]
    errors: str
    log: str

    @property
    def ok(self) -> bool:
        """All calls succeeded and at least one did."""
        return self.returncode == 0 and self.failed == 0 and self.successful > 0


class Sipp:
    """One SIPp 3.6 process (UDP/TCP only; put a TlsRelay in front for TLS servers).

    ``scenario`` is a path, a name in tests/integration/sipp/ (``"uac_call"``, ``"uas"``...), or
    ``"sn:<builtin>"`` for SIPp's built-in scenarios.  ``remote`` is (host, port) to send to
    (None for a UAS).  ``transport``: ``u1`` (UDP), ``t1`` (one TCP connection), ``tn``.
    ``keys`` become ``-key name value`` (``[name]`` in the scenario); ``auth`` = (user, password)
    for ``[authentication]``; ``duration_ms`` is ``-d`` (what ``<pause/>`` waits).
    """

    def __init__(
        self,
        scenario: str,
        remote: tuple[str, int] | None = None,
        *,
        transport: str = "u1",
        service: str | None = None,
        calls: int = 1,
        rate: float | None = None,
        duration_ms: int | None = None,
        local_port: int | None = None,
        media_port: int | None = None,
        rtp_echo: bool = False,
        auth: tuple[str, str] | None = None,
        keys: dict[str, object] | None = None,
        extra_args: list[str] | tuple[str, ...] = (),
        timeout: float = 30.0,
        tmpdir: str | os.PathLike | None = None,
    ):
        if transport not in ("u1", "un", "t1", "tn"):
            raise ValueError("SIPp here supports transports u1, un, t1, tn (no TLS build)")
        self.scenario = scenario
        self.remote = remote
        self.transport = transport
        self.kind = "udp" if transport.startswith("u") else "tcp"
        self._fixed_ports = local_port is not None or media_port is not None
        self.local_port = local_port or free_port(self.kind)
        self.media_port = media_port or _free_even_udp_port()
        self.timeout = timeout
        self._dir = _TempDir(tmpdir, "sipp-")
        self._scenario_argv = self._scenario_args(scenario)
        options = ["-m", str(calls), "-nostdin"]
        options += ["-timeout", f"{int(timeout)}s", "-timeout_error"]
        if transport == "tn":
            options += ["-max_socket", "100"]
        if service is not None:
            options += ["-s", service]
        if rate is not None:
            options += ["-r", str(rate)]
        if duration_ms is not None:
            options += ["-d", str(int(duration_ms))]
        if rtp_echo:
            options.append("-rtp_echo")
        if auth is not None:
            options += ["-au", auth[0], "-ap", auth[1]]
        for key, value in (keys or {}).items():
            options += ["-key", str(key), str(value)]
        options += [str(a) for a in extra_args]
        if remote is not None:
            options.append(f"{remote[0]}:{remote[1]}")
        self._options = options
        self._build()
        self._proc: ManagedProcess | None = None
        self.result: SippResult | None = None

    def __repr__(self) -> str:
        return f"<Sipp {self.scenario} {self.transport} port={self.local_port}>"

    def _build(self) -> None:
        """Set the trace file paths and argv for the current ports."""
        stem = f"sipp-{Path(self.scenario).stem.replace(':', '_')}-{self.local_port}"
        self.stat_path = self._dir.path / f"{stem}.csv"
        self.error_path = self._dir.path / f"{stem}-errors.log"
        self.message_path = self._dir.path / f"{stem}-messages.log"
        self.log_path = self._dir.path / f"{stem}.out"
        argv = ["sipp", *self._scenario_argv]
        argv += ["-i", LOOPBACK, "-p", str(self.local_port), "-t", self.transport]
        argv += ["-mi", LOOPBACK, "-mp", str(self.media_port)]
        argv += ["-trace_stat", "-stf", str(self.stat_path), "-fd", "1"]
        argv += ["-trace_err", "-error_file", str(self.error_path)]
        argv += ["-trace_msg", "-message_file", str(self.message_path)]
        self.argv = argv + self._options

    def _bind_failed(self) -> bool:
        """SIPp exited 254 because a port it was given was taken meanwhile."""
        return (
            self._proc is not None
            and self._proc.returncode == 254
            and "Unable to bind" in _read(self.log_path) + _read(self.error_path)
        )

    def _rebind(self) -> bool:
        """After a bind failure, pick fresh ports (unless the caller fixed them)."""
        if self._fixed_ports or not self._bind_failed():
            return False
        self.local_port = free_port(self.kind)
        self.media_port = _free_even_udp_port()
        self._build()
        return True

    @staticmethod
    def _scenario_args(scenario: str) -> list[str]:
        if scenario.startswith("sn:"):
            name = scenario[3:]
            if name not in SIPP_BUILTINS:
                raise ValueError(f"unknown SIPp builtin {name!r}")
            return ["-sn", name]
        path = Path(scenario)
        if not path.is_file():
            path = SIPP_DIR / (scenario if scenario.endswith(".xml") else scenario + ".xml")
        if not path.is_file():
            raise ValueError(f"no SIPp scenario {scenario!r}")
        return ["-sf", str(path)]

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) SIPp's signalling socket uses."""
        return (LOOPBACK, self.local_port)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    def start(self, timeout: float = 10.0) -> Sipp:
        """Start in the background; for a UAS, return once its signalling port is bound.

        A UAS whose port was taken between choosing and binding is restarted on fresh ports
        (up to 3 attempts).
        """
        for _ in range(3):
            self._start_once(timeout)
            if self.remote is None and self.running:
                # The port may have looked bound because someone else holds it: SIPp then
                # exits within milliseconds.
                time.sleep(0.2)
            if self.remote is not None or self.running:
                return self
            self._proc.wait(5)
            if not self._rebind():
                break
        if not self.running and self.remote is None:
            raise PeerError(f"SIPp exited during start: {self.collect().log[-2000:]}")
        return self

    def _start_once(self, timeout: float) -> None:
        self._proc = ManagedProcess(self.argv, self.log_path, cwd=self._dir.path)
        self._proc.start()
        if self.remote is None:
            try:
                wait_until(
                    lambda: _port_in_use(self.local_port, self.kind) or not self._proc.running,
                    timeout,
                    0.05,
                    "SIPp UAS socket",
                )
            except BaseException:
                self.stop()
                raise

    def wait(self, timeout: float | None = None) -> SippResult:
        """Wait for SIPp to finish on its own (bounded); stop it if it overruns."""
        assert self._proc is not None, "start() first"
        limit = timeout if timeout is not None else self.timeout + 10
        try:
            self._proc.wait(limit)
        except PeerError:
            self.stop()
            raise
        return self.collect()

    def run(self, timeout: float | None = None) -> SippResult:
        """Start, wait for completion and return the result.

        Retried on fresh ports (up to 3 attempts) only when SIPp could not bind its ports.
        """
        for _ in range(3):
            self.start()
            result = self.wait(timeout)
            if not self._rebind():
                break
        return result

    def stop(self, timeout: float = 5.0) -> SippResult:
        """Stop a background SIPp (SIGUSR1 = graceful quit, then SIGTERM/SIGKILL); idempotent."""
        if self._proc is not None and self._proc.running:
            self._proc.send_signal(signal.SIGUSR1)
            try:
                self._proc.wait(timeout)
            except PeerError:
                self._proc.stop(timeout)
        elif self._proc is not None:
            self._proc.stop(timeout)
        return self.collect()

    def cleanup(self) -> None:
        self.stop()
        self._dir.cleanup()

    def collect(self) -> SippResult:
        """Build a SippResult from the exit status and files written so far."""
        stats = _last_csv_row(self.stat_path)
        self.result = SippResult(
            returncode=self._proc.returncode if self._proc else None,
            successful=_opt_int(stats.get("SuccessfulCall(C)")) or 0,
            failed=_opt_int(stats.get("FailedCall(C)")) or 0,
            stats=stats,
            errors=_read(self.error_path),
            log=_read(self.log_path),
        )
        return self.result

    @property
    def messages(self) -> str:
        """SIPp's ``-trace_msg`` log: every message sent and received."""
        return _read(self.message_path)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _last_csv_row(path: Path) -> dict[str, str]:
    lines = [line for line in _read(path).splitlines() if line.strip()]
    if len(lines) < 2:
        return {}
    header = lines[0].rstrip(";").split(";")
    row = lines[-1].rstrip(";").split(";")
    return dict(zip(header, row, strict=False))


# --------------------------------------------------------------------------------------------
# baresip


class Baresip:
    """baresip 1.0 as a scripted UA, driven through its ``ctrl_tcp`` module (netstring JSON).

    ``account`` is one line of baresip's ``accounts`` file (see ``Kamailio.baresip_account``).
    Audio comes from ``audio_source_wav`` (``source_rate`` Hz, default 8 kHz, mono s16 WAV via
    ``aufile``; converted with sox when it is not); ``codec_modules`` are the codecs it loads
    (default G.711 only: ``("g722.so",)`` or ``("opus.so",)`` make a wideband-only peer);
    what baresip hears and sends is recorded by ``sndfile`` into
    ``record_dir`` as ``dump-<peer>-dec.wav`` / ``dump-<peer>-enc.wav``.  ``srtp=True`` loads
    ``srtp.so`` and adds ``;mediaenc=srtp-mand`` (SDES) to the account unless it names one.

    baresip 1.0 hangs up when the ``aufile`` source ends, so the source is padded with silence
    to ``source_min_seconds`` (the original samples come first, unchanged).

    ``sip_trace=True`` runs it with ``-s``: every SIP message it sends and receives goes to
    :attr:`log`, so a test can check what reached the peer (e.g. the SDP of a 200).
    ``extra_accounts`` are further lines of the ``accounts`` file (the ``srtp`` rule applies to
    each; ``command("uafind", aor)`` picks the one ``dial`` uses) and ``extra_modules`` further
    modules to load, e.g. ``aubridge.so`` to carry what one call plays into another call's
    source (``;audio_player=aubridge,NAME`` / ``;audio_source=aubridge,NAME`` account params).

    baresip 1.0's digest supports MD5 only, and it does not verify the server certificate:
    never use it as the witness that a bad certificate is refused.
    """

    def __init__(
        self,
        tmpdir: str | os.PathLike | None = None,
        account: str = "",
        *,
        audio_source_wav: str | os.PathLike | None = None,
        record_dir: str | os.PathLike | None = None,
        srtp: bool = False,
        cafile: str | None = None,
        source_min_seconds: float = 60.0,
        sip_port: int | None = None,
        rtp_ports: tuple[int, int] | None = None,
        extra_config: dict[str, str] | None = None,
        sip_trace: bool = False,
        extra_accounts: tuple[str, ...] = (),
        extra_modules: tuple[str, ...] = (),
        codec_modules: tuple[str, ...] = ("g711.so",),
        source_rate: int = 8000,
        source_channels: int = 1,
    ):
        if not account:
            raise ValueError("account line required, e.g. Kamailio.baresip_account('alice')")
        self._dir = _TempDir(tmpdir, "baresip-")
        self.dir = self._dir.path
        self.sip_port = sip_port or free_port_pair()
        self.ctrl_port = free_port("tcp")
        self.record_dir = Path(record_dir) if record_dir else self.dir / "recordings"
        self.record_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "baresip.log"
        self.accounts = [
            line + ";mediaenc=srtp-mand" if srtp and "mediaenc=" not in line else line
            for line in (account, *extra_accounts)
        ]
        self.account = self.accounts[0]
        self._extra_modules = list(extra_modules)
        self._codec_modules = list(codec_modules)
        self.srtp = srtp
        if audio_source_wav is None:
            audio_source_wav = self.dir / "silence.wav"
            make_tone_wav(audio_source_wav, seconds=1.0, frequency=0)
        self.audio_source_wav = _prepare_source(
            Path(audio_source_wav), self.dir, source_min_seconds, source_rate, source_channels
        )
        self._fixed_ports = sip_port is not None
        self._rtp_ports = rtp_ports
        self._cafile = cafile or get_pki().ca.cert
        self._extra_config = dict(extra_config or {})
        self._sip_trace = sip_trace
        self._write_config()
        (self.dir / "contacts").write_text("")
        self._proc: ManagedProcess | None = None
        self._ctrl: socket.socket | None = None
        self._reader: threading.Thread | None = None
        self._cond = threading.Condition()
        self._responses: dict[str, dict] = {}
        self.events: list[dict] = []
        self._token = 0

    def _write_config(self) -> None:
        """Write ``config`` and ``accounts`` for the current ports."""
        lo, hi = self._rtp_ports or _rtp_port_range()
        config = {
            "poll_method": "epoll",
            "sip_listen": f"{LOOPBACK}:{self.sip_port}",
            "sip_cafile": self._cafile,
            "call_local_timeout": "120",
            "call_max_calls": "4",
            "audio_player": "alsa,null",
            "audio_source": f"aufile,{self.audio_source_wav}",
            "audio_alert": "alsa,null",
            "audio_level": "no",
            "rtp_ports": f"{lo}-{hi}",
            "jitter_buffer_delay": "5-10",
            "rtcp_mux": "no",
            "net_interface": LOOPBACK,
            "module_path": "/usr/lib/baresip/modules",
            "ctrl_tcp_listen": f"{LOOPBACK}:{self.ctrl_port}",
            "snd_path": str(self.record_dir),
        }
        config.update(self._extra_config)
        modules = [*self._codec_modules, "aufile.so", "alsa.so", "sndfile.so"]
        if self.srtp:
            modules.append("srtp.so")
        modules += self._extra_modules
        lines = [f"{k}\t{v}" for k, v in config.items()]
        lines += [f"module\t{m}" for m in modules]
        lines += ["module_tmp\tuuid.so", "module_tmp\taccount.so"]
        lines += ["module_app\tmenu.so", "module_app\tctrl_tcp.so"]
        (self.dir / "config").write_text("\n".join(lines) + "\n")
        fd = os.open(self.dir / "accounts", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("".join(line + "\n" for line in self.accounts))

    def __repr__(self) -> str:
        return f"<Baresip sip={self.sip_port} ctrl={self.ctrl_port}>"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.running

    def start(self, timeout: float = 10.0) -> Baresip:
        """Start baresip (``-f dir -v``) and connect to ctrl_tcp; registration runs on its own.

        A port taken between choosing and binding makes it pick fresh ports and try again
        (up to 3 attempts) unless ``sip_port`` was given.
        """
        if self.running:
            return self
        for attempt in range(3):
            log_offset = len(self.log)
            try:
                return self._start_once(timeout)
            except PeerError:
                taken = "Address already in use" in self.log[log_offset:]
                if self._fixed_ports or not taken or attempt == 2:
                    raise
                self.sip_port = free_port_pair()
                self.ctrl_port = free_port("tcp")
                self._write_config()
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> Baresip:
        log_offset = len(self.log)
        argv = ["baresip", "-f", self.dir, "-v"] + (["-s"] if self._sip_trace else [])
        self._proc = ManagedProcess(argv, self.log_path, cwd=self.dir)
        self._proc.start()
        listening = f"ctrl_tcp: TCP socket listening on {LOOPBACK}:{self.ctrl_port}"
        try:
            wait_until(
                lambda: (not self._proc.running) or "baresip is ready." in self.log[log_offset:],
                timeout,
                0.05,
                "baresip ready",
            )
            if not self._proc.running:
                raise PeerError("baresip exited during start:\n" + self.log[-3000:])
            if listening not in self.log[log_offset:]:
                raise PeerError("baresip ctrl_tcp did not listen:\n" + self.log[-3000:])
            self._ctrl = socket.create_connection((LOOPBACK, self.ctrl_port), timeout=2)
            self._ctrl.settimeout(0.2)
            self._reader = threading.Thread(target=self._read_loop, daemon=True)
            self._reader.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_loop(self) -> None:
        buf = b""
        sock = self._ctrl
        while sock is not None and self._ctrl is sock:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            buf += data
            while True:
                colon = buf.find(b":")
                if colon <= 0 or not buf[:colon].isdigit():
                    if len(buf) > 10 and colon < 0:
                        buf = b""
                    break
                length = int(buf[:colon])
                end = colon + 1 + length
                if len(buf) < end + 1:
                    break
                payload, buf = buf[colon + 1 : end], buf[end + 1 :]
                try:
                    msg = json.loads(payload)
                except ValueError:
                    continue
                with self._cond:
                    if msg.get("response"):
                        self._responses[str(msg.get("token"))] = msg
                    elif msg.get("event"):
                        self.events.append(msg)
                    self._cond.notify_all()

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict:
        """Send one ctrl_tcp command; return its response dict (``ok``, ``data``).

        Safe to call from several threads (e.g. ``deferToThread`` in trial tests).
        """
        if self._ctrl is None:
            raise PeerError("baresip not started")
        with self._cond:
            self._token += 1
            token = str(self._token)
            body = json.dumps({"command": command, "params": params, "token": token}).encode()
            self._ctrl.sendall(str(len(body)).encode() + b":" + body + b",")
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PeerError(f"baresip did not answer {command!r} in {timeout}s")
                self._cond.wait(left)
            return self._responses.pop(token)

    def dial(self, uri: str) -> dict:
        """Call ``uri`` (ctrl_tcp ``dial``)."""
        return self.command("dial", uri)

    def answer(self) -> dict:
        return self.command("answer")

    def hangup(self) -> dict:
        return self.command("hangup")

    def wait_for_event(self, type_: str, timeout: float = 10.0, start: int = 0) -> dict:
        """Wait for a ctrl_tcp event of ``type_`` (e.g. CALL_ESTABLISHED, CALL_CLOSED).

        Searches ``self.events[start:]``: pass ``len(ua.events)`` taken before an action to
        wait for an event caused by that action only.  Returns the event dict.
        """

        def find():
            with self._cond:
                for event in self.events[start:]:
                    if event.get("type") == type_:
                        return event
            if not self.running:
                raise PeerError(f"baresip exited while waiting for {type_}")
            return None

        return wait_until(find, timeout, 0.05, f"baresip event {type_}")

    @property
    def log(self) -> str:
        return _read(self.log_path)

    def wait_for(self, pattern: str, timeout: float = 10.0) -> re.Match:
        """Wait until regex ``pattern`` matches baresip's output; return the match."""
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.log), timeout, 0.05, f"baresip log /{pattern}/")

    def wait_registered(self, timeout: float = 10.0) -> re.Match:
        """Wait for a 200 response to baresip's REGISTER ("200 OK (...) [N binding]")."""
        return self.wait_for(r"\b200 OK\b.*\[\d+ bindings?\]", timeout)

    def recordings(self) -> list[Path]:
        """sndfile dumps so far: ``dump-*-dec.wav`` (heard) and ``dump-*-enc.wav`` (sent)."""
        return sorted(self.record_dir.glob("dump-*-*.wav"))

    def received_recordings(self) -> list[Path]:
        return sorted(self.record_dir.glob("dump-*-dec.wav"))

    def stop(self, timeout: float = 5.0) -> None:
        """Close ctrl_tcp and SIGTERM the baresip we started (SIGKILL fallback)."""
        sock, self._ctrl = self._ctrl, None
        if sock is not None:
            sock.close()
        if self._reader is not None:
            self._reader.join(2)
            self._reader = None
        if self._proc is not None:
            self._proc.stop(timeout)

    def cleanup(self) -> None:
        self.stop()
        self._dir.cleanup()


def _rtp_port_range(size: int = 40) -> tuple[int, int]:
    base = _free_even_udp_port()
    return (base, base + size)


# --------------------------------------------------------------------------------------------
# Audio helpers


def make_speech_wav(path: str | os.PathLike, text: str, rate: int = 8000) -> Path:
    """Synthesize ``text`` with espeak-ng and convert to ``rate`` Hz mono s16 WAV with sox."""
    path = Path(path)
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(
        ["espeak-ng", "-w", str(raw), text], check=True, timeout=30, capture_output=True
    )
    try:
        _sox_convert(raw, path, rate)
    finally:
        raw.unlink(missing_ok=True)
    return path


def make_tone_wav(
    path: str | os.PathLike, seconds: float = 1.0, frequency: float = 440.0, rate: int = 8000
) -> Path:
    """A sine tone (or silence for ``frequency=0``) as mono s16 WAV."""
    n = int(seconds * rate)
    t = np.arange(n) / rate
    samples = (0.5 * 32767 * np.sin(2 * np.pi * frequency * t)).astype(np.int16)
    write_wav(path, samples, rate)
    return Path(path)


def _sox_convert(src: Path, dst: Path, rate: int) -> None:
    subprocess.run(
        [
            "sox",
            str(src),
            "-r",
            str(rate),
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            str(dst),
        ],
        check=True,
        timeout=30,
        capture_output=True,
    )


def _prepare_source(
    path: Path, workdir: Path, min_seconds: float, rate: int = 8000, channels: int = 1
) -> Path:
    """A ``rate`` Hz s16 copy of ``path`` in ``workdir``, padded with silence to min_seconds,
    mono or the mono signal on each of ``channels`` (baresip's Opus runs its audio in
    stereo, and its ``aufile`` source then wants a two-channel file)."""
    with wave.open(str(path), "rb") as w:
        fmt = (w.getframerate(), w.getnchannels(), w.getsampwidth())
    if fmt != (rate, 1, 2):
        converted = workdir / (path.stem + f"-{rate // 1000}k.wav")
        _sox_convert(path, converted, rate)
        path = converted
    samples = read_wav(path)
    pad = max(0, int(min_seconds * rate) - samples.size)
    out = workdir / "audio-source.wav"
    padded = np.concatenate((samples, np.zeros(pad, dtype=np.int16)))
    write_wav(out, np.repeat(padded[:, None], channels, axis=1) if channels > 1 else padded, rate)
    return out


def read_wav(path: str | os.PathLike) -> np.ndarray:
    """Samples of a 16-bit WAV as int16 (first channel of a multi-channel file)."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit samples, got {8 * w.getsampwidth()}-bit")
        channels = w.getnchannels()
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data[::channels].astype(np.int16) if channels > 1 else data.astype(np.int16)


def wav_rate(path: str | os.PathLike) -> int:
    with wave.open(str(path), "rb") as w:
        return w.getframerate()


def write_wav(path: str | os.PathLike, samples: np.ndarray, rate: int = 8000) -> None:
    """Write int16 ``samples`` as a WAV file: mono, or shaped (frames, channels)."""
    data = np.asarray(samples)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(data.shape[1] if data.ndim == 2 else 1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, dtype="<i2").tobytes())


def xcorr_peak(sent: np.ndarray, received: np.ndarray) -> tuple[float, int]:
    """Find ``sent`` inside ``received``: normalised cross-correlation peak and its lag.

    Returns ``(peak, lag)``; ``lag`` is how many samples ``received`` is delayed relative to
    ``sent`` (negative: it leads).  Template matching: at each lag the correlation is divided by
    the energy of the whole of ``sent`` and of the ``len(sent)`` window of ``received`` under
    it, so by Cauchy-Schwarz the peak is at most 1.0; a delayed and scaled clean copy scores
    ~1.0 whatever else surrounds it in ``received``, a truncated copy scores
    sqrt(fraction of its energy present), and unrelated speech or noise scores low.
    Computed with FFTs (O(n log n)); both signals have their mean removed first.
    """
    a = np.asarray(sent, dtype=np.float64)
    b = np.asarray(received, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        return (0.0, 0)
    a = a - a.mean()
    b = b - b.mean()
    energy_a = float(np.dot(a, a))
    if energy_a <= 0:
        return (0.0, 0)
    n = a.size + b.size - 1
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(b, size) * np.conj(np.fft.rfft(a, size)), size)
    # corr[k] = sum_i b[i + k] * a[i] (circular); unwrap to lags -(len(a)-1) .. len(b)-1.
    corr = np.concatenate((corr[size - (a.size - 1) :], corr[: b.size]))
    lags = np.arange(-(a.size - 1), b.size)
    cb = np.concatenate(([0.0], np.cumsum(b * b)))
    window = cb[np.clip(lags + a.size, 0, b.size)] - cb[np.clip(lags, 0, b.size)]
    # Windows of (near-)digital silence carry no evidence either way.
    valid = window > 1e-9 * energy_a
    if not valid.any():
        return (0.0, 0)
    norm = np.zeros_like(corr)
    norm[valid] = corr[valid] / np.sqrt(energy_a * window[valid])
    best = int(np.argmax(np.abs(norm)))
    return (float(min(1.0, abs(norm[best]))), int(lags[best]))


def echo_peaks(sent: np.ndarray, heard: np.ndarray, piece: int = 4000) -> list[float]:
    """The correlation peak (:func:`xcorr_peak`) of each voiced *piece*-sample slice of
    *sent* found in *heard*; a slice is voiced when its RMS is at least a tenth of all of
    *sent*'s.  A late packet dropped or a silence inserted on the way (a jitter or echo
    buffer running dry under load) shifts everything after it, which defeats one long
    template; short pieces are each found whole."""
    level = float(np.sqrt(np.mean(sent.astype(np.float64) ** 2)))
    peaks = []
    for start in range(0, len(sent) - piece + 1, piece):
        part = sent[start : start + piece]
        if np.sqrt(np.mean(part.astype(np.float64) ** 2)) >= level / 10:
            peaks.append(xcorr_peak(part, heard)[0])
    return peaks


def pcap_rtp_payloads(path: str | os.PathLike, payload_type: int | None = None) -> list[bytes]:
    """RTP payloads (in capture order) from a classic libpcap file of Ethernet/IPv4/UDP packets.

    Only what the SIPp sample captures need: no pcapng, no VLAN, no IP options beyond IHL.
    """
    import struct

    data = Path(path).read_bytes()
    if len(data) < 24:
        raise ValueError(f"{path}: not a pcap file")
    magic = data[:4]
    if magic == b"\xd4\xc3\xb2\xa1":
        endian = "<"
    elif magic == b"\xa1\xb2\xc3\xd4":
        endian = ">"
    else:
        raise ValueError(f"{path}: not a classic pcap file")
    payloads = []
    offset = 24
    while offset + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[offset + 8 : offset + 12])[0]
        frame = data[offset + 16 : offset + 16 + incl]
        offset += 16 + incl
        if len(frame) < 14 + 20 + 8 + 12 or frame[12:14] != b"\x08\x00":
            continue
        ihl = (frame[14] & 0x0F) * 4
        if frame[14 + 9] != 17:
            continue
        rtp = frame[14 + ihl + 8 :]
        if len(rtp) < 12 or rtp[0] >> 6 != 2:
            continue
        cc = rtp[0] & 0x0F
        pt = rtp[1] & 0x7F
        if payload_type is not None and pt != payload_type:
            continue
        payloads.append(rtp[12 + 4 * cc :])
    return payloads


def alaw_decode(data: bytes) -> np.ndarray:
    """ITU-T G.711 A-law bytes to int16 samples (test-local; independent of voiptwisted)."""
    a = np.frombuffer(data, dtype=np.uint8) ^ 0x55
    sign = a & 0x80
    exponent = (a >> 4) & 0x07
    mantissa = (a & 0x0F).astype(np.int32)
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << (exponent.astype(np.int32) - 1),
    )
    return np.where(sign != 0, magnitude, -magnitude).astype(np.int16)


def g711a_pcap_samples(path: str | os.PathLike = G711A_PCAP) -> np.ndarray:
    """The PCMA audio (PT 8) of a capture such as SIPp's g711a.pcap, decoded to int16."""
    return alaw_decode(b"".join(pcap_rtp_payloads(path, payload_type=8)))


# --------------------------------------------------------------------------------------------
# A minimal, independent digest REGISTER client (a witness for the registrar configuration)


@dataclass
class RegisterResult:
    """Final answer to ``digest_register``; ``connection`` is still open (close it)."""

    status: int
    response: str
    challenge: str | None
    connection: socket.socket

    def close(self) -> None:
        self.connection.close()


def _digest(algorithm: str):
    import hashlib

    name = algorithm.upper().removesuffix("-SESS")
    if name == "MD5":
        return lambda s: hashlib.md5(s.encode(), usedforsecurity=False).hexdigest()
    if name == "SHA-256":
        return lambda s: hashlib.sha256(s.encode()).hexdigest()
    raise ValueError(f"unsupported digest algorithm {algorithm!r}")


def _parse_challenge(value: str) -> dict[str, str]:
    scheme, _, rest = value.strip().partition(" ")
    params = {}
    for m in re.finditer(r'([A-Za-z-]+)\s*=\s*(?:"([^"]*)"|([^,\s]+))', rest):
        params[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
    params["scheme"] = scheme
    return params


def _read_response(conn: socket.socket, deadline: float) -> str:
    buf = b""
    while True:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].decode("utf-8", "replace")
            m = re.search(r"(?im)^(?:content-length|l)\s*:\s*(\d+)", head)
            total = head_end + 4 + (int(m.group(1)) if m else 0)
            if len(buf) >= total:
                return buf[:total].decode("utf-8", "replace")
        if len(buf) > 65536:
            raise PeerError("response too large")
        left = deadline - time.monotonic()
        if left <= 0:
            raise PeerError("timed out waiting for a SIP response")
        conn.settimeout(left)
        chunk = conn.recv(65536)
        if not chunk:
            raise PeerError("connection closed before a SIP response")
        buf += chunk


def digest_register(
    kamailio: Kamailio,
    user: str,
    password: str | None = None,
    *,
    transport: str = "tls",
    expires: int = 60,
    timeout: float = 5.0,
    server_hostname: str = "localhost",
) -> RegisterResult:
    """REGISTER ``user`` over a fresh TLS/TCP connection, answering one 401 (RFC 3261 §22.2).

    Digest per RFC 7616 (MD5, SHA-256, qop=auth), written with hashlib only so it is an
    independent check of the registrar, not of voiptwisted.  TLS verifies the test CA and
    ``server_hostname``.  Returns the final response; 1xx are skipped.
    """
    import ssl

    password = kamailio.users.get(user, "") if password is None else password
    host, port = kamailio.address(transport)
    deadline = time.monotonic() + timeout
    raw = socket.create_connection((host, port), timeout=timeout)
    if transport == "tls":
        ctx = ssl.create_default_context(cafile=kamailio.ca_cert)
        conn = ctx.wrap_socket(raw, server_hostname=server_hostname)
    elif transport == "tcp":
        conn = raw
    else:
        raw.close()
        raise ValueError("digest_register supports tls and tcp")
    local_host, local_port = conn.getsockname()[:2]
    call_id = secrets.token_hex(8)
    tag = secrets.token_hex(4)
    proto = transport.upper()
    ruri = f"sip:{host}:{port};transport={transport}"

    def request(cseq: int, authorization: str | None) -> str:
        lines = [
            f"REGISTER {ruri} SIP/2.0",
            f"Via: SIP/2.0/{proto} {local_host}:{local_port}"
            f";branch=z9hG4bK{secrets.token_hex(8)};rport",
            "Max-Forwards: 70",
            f"From: <sip:{user}@{host}>;tag={tag}",
            f"To: <sip:{user}@{host}>",
            f"Call-ID: {call_id}",
            f"CSeq: {cseq} REGISTER",
            f"Contact: <sip:{user}@{local_host}:{local_port};transport={transport}>",
            f"Expires: {expires}",
            "User-Agent: peers.digest_register",
        ]
        if authorization:
            lines.append(f"Authorization: {authorization}")
        lines.append("Content-Length: 0")
        conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while True:
            text = _read_response(conn, deadline)
            if not text.startswith("SIP/2.0 1"):
                return text

    try:
        text = request(1, None)
        challenge = None
        if text.startswith("SIP/2.0 401"):
            m = re.search(r"(?im)^WWW-Authenticate\s*:\s*(.+)$", text)
            if not m:
                raise PeerError("401 without WWW-Authenticate")
            challenge = m.group(1).strip()
            c = _parse_challenge(challenge)
            algorithm = c.get("algorithm", "MD5")
            h = _digest(algorithm)
            realm, nonce = c["realm"], c["nonce"]
            cnonce, nc = secrets.token_hex(8), "00000001"
            ha1 = h(f"{user}:{realm}:{password}")
            if algorithm.upper().endswith("-SESS"):
                ha1 = h(f"{ha1}:{nonce}:{cnonce}")
            ha2 = h(f"REGISTER:{ruri}")
            auth = (
                f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{ruri}", '
                f"algorithm={algorithm}"
            )
            if "auth" in [q.strip() for q in c.get("qop", "").split(",")]:
                digest = h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")
                auth += f', qop=auth, nc={nc}, cnonce="{cnonce}"'
            else:
                digest = h(f"{ha1}:{nonce}:{ha2}")
            auth += f', response="{digest}"'
            if "opaque" in c:
                auth += f', opaque="{c["opaque"]}"'
            text = request(2, auth)
        status = int(text.split(" ", 2)[1])
    except BaseException:
        conn.close()
        raise
    return RegisterResult(status=status, response=text, challenge=challenge, connection=conn)
