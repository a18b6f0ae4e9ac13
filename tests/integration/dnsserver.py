"""An in-memory DNS zone, and a real DNS server for it on 127.0.0.1 (UDP + TCP, one port).

:class:`MemoryZone` is a ``twisted.names`` authority built from Python records (any type:
A, AAAA, SRV, NAPTR for RFC 3263 §4.1 ...): the unit tests
use it directly as an ``IResolver`` (answers, NXDOMAIN for names of the zone it lacks), the
integration tests serve it with :func:`start_dns_server` to a client that speaks DNS on the
wire (``--dns-server 127.0.0.1:PORT``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.names import authority, dns, server


class MemoryZone(authority.FileAuthority):
    """An authoritative zone ``origin`` holding ``records`` (name -> record payloads)."""

    def __init__(self, origin: str, records: Mapping[str, Iterable[Any]]) -> None:
        super().__init__((origin, records))

    def loadFile(self, filename: Any) -> None:
        """Build ``soa`` and ``records`` from ``(origin, records)`` instead of a file."""
        origin, records = filename
        soa = dns.Record_SOA(
            mname=f"ns.{origin}", rname=f"root.{origin}", serial=1, minimum=60, expire=60, ttl=60
        )
        self.soa = (origin.encode(), soa)
        self.records = {origin.encode().lower(): [soa]}
        for name, payloads in records.items():
            self.records.setdefault(name.encode().lower(), []).extend(payloads)


@dataclass
class DNSServer:
    """A running DNS server: its port and how to stop it."""

    host: str
    port: int
    listeners: list[Any]

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``, as ``dns_server=`` takes it."""
        return self.host, self.port

    def stop(self) -> Any:
        """Stop listening on both transports (a Deferred firing when done)."""
        from twisted.internet.defer import gatherResults, maybeDeferred

        listeners, self.listeners = self.listeners, []
        return gatherResults([maybeDeferred(port.stopListening) for port in listeners])


def start_dns_server(reactor: Any, zone: MemoryZone, attempts: int = 20) -> DNSServer:
    """Serve ``zone`` on 127.0.0.1 at a run-time port, over UDP and TCP (the same number)."""
    factory = server.DNSServerFactory(authorities=[zone])
    factory.noisy = False
    for _ in range(attempts):
        udp = reactor.listenUDP(0, dns.DNSDatagramProtocol(factory), interface="127.0.0.1")
        port = udp.getHost().port
        try:
            tcp = reactor.listenTCP(port, factory, interface="127.0.0.1")
        except CannotListenError:
            udp.stopListening()
            continue
        return DNSServer("127.0.0.1", port, [udp, tcp])
    raise RuntimeError(f"no port free for both UDP and TCP after {attempts} attempts")
