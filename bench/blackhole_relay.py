"""A TCP relay that can turn into a black hole: the "silent flow" fault of ``bench/faults.py``.

It accepts connections on 127.0.0.1 (a port chosen at run time) and relays bytes both ways
to one target.  :meth:`BlackHoleRelay.black_hole` turns every connection open at that
moment silent: they stay open (no FIN, no RST), bytes from either side are read and
dropped.  Connections accepted later are relayed normally, so a client that gives up on the
dead flow and reconnects gets through again.  The relay records when each silenced
connection was closed by the client side (how long the client took to notice).

One thread with one ``selectors`` loop; the loop checks a stop flag every 50 ms and holds
at most ``max_connections`` connections, so it is bounded in time and size.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

#: Bytes read per ``recv``.
CHUNK = 65536


@dataclass
class _Pair:
    """One relayed connection: the accepted client socket and its upstream socket."""

    client: socket.socket
    upstream: socket.socket
    accepted: float
    silent: bool = False
    silenced_at: float | None = None
    client_closed_at: float | None = None
    dropped: int = 0
    relayed: int = 0
    pending: dict[int, bytes] = field(default_factory=dict)


class BlackHoleRelay:
    """Relay 127.0.0.1:``port`` -> ``target``; see the module docstring."""

    def __init__(self, target: tuple[str, int], max_connections: int = 64) -> None:
        self.target = target
        self.max_connections = max_connections
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.setblocking(False)
        self.port: int = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._silence_request = threading.Event()
        self.pairs: list[_Pair] = []
        self._thread = threading.Thread(target=self._loop, name="blackhole-relay", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def start(self) -> BlackHoleRelay:
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._thread.start()
        return self

    def black_hole(self, timeout: float = 2.0) -> float:
        """Silence every open connection; return the time (``time.monotonic``) it happened."""
        self._silence_request.set()
        deadline = time.monotonic() + timeout
        while self._silence_request.is_set() and time.monotonic() < deadline:
            time.sleep(0.01)
        with self._lock:
            times = [p.silenced_at for p in self.pairs if p.silenced_at is not None]
        return max(times) if times else time.monotonic()

    def snapshot(self) -> list[dict[str, float | int | bool | None]]:
        """Every connection seen so far (open or closed), oldest first."""
        with self._lock:
            return [
                {
                    "accepted": p.accepted,
                    "silent": p.silent,
                    "silenced_at": p.silenced_at,
                    "client_closed_at": p.client_closed_at,
                    "dropped": p.dropped,
                    "relayed": p.relayed,
                }
                for p in self.pairs
            ]

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        with self._lock:
            for pair in self.pairs:
                for sock in (pair.client, pair.upstream):
                    sock.close()
        self._listener.close()
        self._selector.close()

    # -- the loop (relay thread only) ------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._silence_request.is_set():
                now = time.monotonic()
                with self._lock:
                    for pair in self.pairs:
                        if pair.client_closed_at is None and not pair.silent:
                            pair.silent, pair.silenced_at = True, now
                self._silence_request.clear()
            for key, _ in self._selector.select(0.05):
                if key.data is None:
                    self._accept()
                else:
                    pair, side = key.data
                    self._readable(pair, side)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except OSError:
            return
        open_pairs = sum(1 for p in self.pairs if p.client_closed_at is None)
        if open_pairs >= self.max_connections:
            client.close()
            return
        upstream = socket.create_connection(self.target, timeout=3)
        for sock in (client, upstream):
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = _Pair(client, upstream, time.monotonic())
        with self._lock:
            self.pairs.append(pair)
        self._selector.register(client, selectors.EVENT_READ, (pair, "client"))
        self._selector.register(upstream, selectors.EVENT_READ, (pair, "upstream"))

    def _readable(self, pair: _Pair, side: str) -> None:
        source = pair.client if side == "client" else pair.upstream
        sink = pair.upstream if side == "client" else pair.client
        try:
            data = source.recv(CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(pair, side)
            return
        if pair.silent:
            pair.dropped += len(data)
            return
        try:
            sink.setblocking(True)
            sink.settimeout(2)
            sink.sendall(data)
            pair.relayed += len(data)
        except OSError:
            self._close(pair, side)
        finally:
            if sink.fileno() >= 0:
                sink.setblocking(False)

    def _close(self, pair: _Pair, side: str) -> None:
        """One side closed: a silent pair keeps the other side open (no FIN, no RST)."""
        now = time.monotonic()
        with self._lock:
            if side == "client" and pair.client_closed_at is None:
                pair.client_closed_at = now
        closing = [pair.client] if (pair.silent and side == "client") else []
        if pair.silent and side == "upstream":
            closing = [pair.upstream]
        if not pair.silent:
            closing = [pair.client, pair.upstream]
            with self._lock:
                if pair.client_closed_at is None:
                    pair.client_closed_at = now
        for sock in closing:
            if sock.fileno() >= 0:
                self._selector.unregister(sock)
                sock.close()
