"""Locating the registrar (RFC 3263): which hosts and ports to try for an AOR, via DNS SRV.

:class:`ServerLocator` is the resolver :func:`voiptwisted.sip.connect.client_endpoint` uses
by default.  For the AOR's TARGET (the ``maddr`` parameter if present, else the host,
RFC 3263 §4):

* an IP literal is used as it is, at the URI's port or the transport's default port
  (5061 for TLS, 5060 for TCP) -- no DNS (§4.2);
* a name with an explicit port is connected to at that port; the endpoint looks up its
  A/AAAA records (§4.2);
* a name without a port is looked up as SRV ``_sips._tcp.<name>`` for TLS (``sips:``, and
  ``sip:`` without ``transport`` here: a SIP URI reached over TLS uses the ``_sips`` service,
  §4.2), ``_sip._tcp.<name>`` for ``;transport=tcp`` or ``_sip._udp.<name>`` (port 5060 by
  default) for ``;transport=udp``.  The targets are ordered by priority,
  and within one priority by the weighted random selection of RFC 2782; at most
  :data:`MAX_TARGETS` are kept.  A single SRV record whose target is ``.`` means the service
  is not offered there (RFC 2782): :class:`ServiceNotOffered`.  No SRV records (NXDOMAIN or
  an empty answer) -- or a failed SRV lookup, logged in one line -- falls back to the name's
  A/AAAA records at the default port (§4.2).

The transport (RFC 3263 §4.1) is the AOR's when it names one (``;transport=tcp``,
``;transport=udp``, ``;transport=tls``), TLS for a ``sips:`` AOR whatever it says (never
downgraded), and TLS for an IP literal or a given port.  Otherwise -- a ``sip:`` AOR naming
no transport and no port -- :meth:`ServerLocator.choose_transport` asks DNS for the
domain's NAPTR records and takes, of those with flag ``s`` and a service we support
(``SIPS+D2T`` TLS, ``SIP+D2T`` TCP, ``SIP+D2U`` UDP), the one of lowest order, then
preference; its replacement is the SRV name then looked up (instead of the ``_sips._tcp``
/ ``_sip._tcp`` / ``_sip._udp`` name).  A ``sips:`` AOR takes only ``SIPS+D2T`` records.
No usable NAPTR record (none published, none we support, a failed lookup) keeps TLS and
the ``_sips._tcp`` SRV name, as before.  NAPTR is unauthenticated: a domain (or whoever
answers for it) may thus move a plain ``sip:`` AOR to TCP or UDP; ``sips:`` or
``;transport=tls`` keeps it on TLS.

The TLS identity checked is *not* affected: every target is verified against the SIP domain
(RFC 5922 §4.1; see :func:`voiptwisted.sip.connect.tls_server_name`), never against the SRV
target's host name, which DNS -- unauthenticated -- chose.

Lookups are bounded: each DNS query is retried after :data:`DNS_TIMEOUT` seconds and given up
after their sum (per server); nothing here holds a timer or a socket between connects.
"""

from __future__ import annotations

import ipaddress
import random
import socket
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import (
    IHostnameResolver,
    IHostResolution,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
)
from twisted.logger import Logger
from twisted.names import client, dns
from twisted.names import error as dns_error
from twisted.names.common import ResolverBase
from twisted.python.failure import Failure
from zope.interface import implementer

from voiptwisted.sip.uri import SipURI

__all__ = [
    "DNS_TIMEOUT",
    "MAX_TARGETS",
    "NAPTR_SERVICES",
    "DNSHostnameResolver",
    "ServerLocator",
    "ServiceNotOffered",
    "dns_server_resolver",
    "naptr_applies",
    "order_naptr_records",
    "order_srv_records",
    "srv_name",
]

log = Logger()

#: Seconds before each retry of one DNS query; it fails after their sum (4 s per server).
DNS_TIMEOUT = (1, 3)
#: At most this many SRV targets are tried per connect (bounds a hostile or broken zone).
MAX_TARGETS = 16

_DEFAULT_PORTS = {"TLS": 5061, "TCP": 5060, "UDP": 5060}

#: RFC 3263 §4.1 / RFC 3261 §26.5: the NAPTR services we support, and their transports.
NAPTR_SERVICES = {"SIPS+D2T": "TLS", "SIP+D2T": "TCP", "SIP+D2U": "UDP"}
#: At most this many NAPTR choices are remembered (one per domain located).
_MAX_REMEMBERED = 64


def naptr_applies(aor: SipURI) -> bool:
    """Whether RFC 3263 §4.1 leaves the transport to DNS NAPTR for ``aor``: it names no
    ``transport`` and no port, and its target (``maddr`` or host) is a name, not an IP
    address."""
    if "transport" in aor.parameters or aor.port_given:
        return False
    return not isinstance(aor.maddr.host, ipaddress.IPv4Address | ipaddress.IPv6Address)


def order_naptr_records(
    records: Sequence[dns.Record_NAPTR], secure: bool = False
) -> list[tuple[str, str]]:
    """The usable NAPTR records as ``(transport, SRV name)``, best first (RFC 3263 §4.1).

    Usable: flag ``s`` (the replacement names SRV records), a service of
    :data:`NAPTR_SERVICES` (only ``SIPS+D2T`` when ``secure``: a SIPS URI is never
    resolved to a plain transport) and a replacement other than the root.  Ordered by
    ``order``, then ``preference`` (RFC 3403 §4.1).
    """
    usable = []
    for record in records:
        service = record.service.string.decode("ascii", "replace").upper()
        transport = NAPTR_SERVICES.get(service)
        replacement = str(record.replacement).rstrip(".")
        if (
            record.flags.string.lower() != b"s"
            or transport is None
            or (secure and transport != "TLS")
            or not replacement
        ):
            continue
        usable.append((record.order, record.preference, transport, replacement))
    usable.sort(key=lambda item: (item[0], item[1]))
    return [(transport, replacement) for _, _, transport, replacement in usable]


class ServiceNotOffered(Exception):
    """DNS says the SIP service is not offered at the domain (an SRV target of ``.``)."""


def srv_name(host: str, transport: str) -> str:
    """The SRV name to look up for ``host`` (RFC 3263 §4.2): ``_sips._tcp`` for TLS,
    ``_sip._tcp`` for TCP, ``_sip._udp`` for UDP."""
    service = "_sips" if transport == "TLS" else "_sip"
    protocol = "_udp" if transport == "UDP" else "_tcp"
    return f"{service}.{protocol}.{host.rstrip('.')}"


def order_srv_records(
    records: Sequence[dns.Record_SRV], rng: random.Random, limit: int = MAX_TARGETS
) -> list[dns.Record_SRV]:
    """Order SRV records for contact: lowest priority first, weighted random within one.

    RFC 2782: among the records of one priority not yet chosen (zero weights first), pick a
    uniform random number between 0 and the sum of their weights, inclusive, and take the
    first record whose running sum of weights reaches it; repeat.  ``rng.randint`` is the
    random source (injected so tests can script it).  At most ``limit`` records are returned.
    """
    ordered: list[dns.Record_SRV] = []
    for priority in sorted({record.priority for record in records}):
        remaining = [r for r in records if r.priority == priority and r.weight == 0]
        remaining += [r for r in records if r.priority == priority and r.weight != 0]
        while remaining and len(ordered) < limit:
            pick = rng.randint(0, sum(r.weight for r in remaining))
            running = 0
            for index, record in enumerate(remaining):
                running += record.weight
                if running >= pick:
                    ordered.append(remaining.pop(index))
                    break
    return ordered


def _target_text(record: dns.Record_SRV) -> str:
    """The SRV target as text, without the trailing dot ("" for the root, ``.``)."""
    return str(record.target).rstrip(".")


def _describe_dns_failure(failure: Failure) -> tuple[str, bool]:
    """A short reason for a failed lookup, and whether it just means "no such name"."""
    if failure.check(dns_error.DNSNameError, dns_error.AuthoritativeDomainError):
        return "no such name (NXDOMAIN)", True
    if failure.check(defer.TimeoutError):  # the client's final give-up; DNSQueryTimeoutError too
        return "no answer in time (timeout)", False
    if failure.check(dns_error.DNSServerError):
        return "server failure (SERVFAIL)", False
    if failure.check(dns_error.DNSQueryRefusedError):
        return "query refused (REFUSED)", False
    if failure.check(dns_error.DNSFormatError, dns_error.DNSNotImplementedError):
        return "the server could not answer this query", False
    if failure.check(dns_error.DomainError):
        return "no such name", True
    return f"{type(failure.value).__name__}: {failure.getErrorMessage()}", False


def dns_server_resolver(server: tuple[str, int], reactor: Any) -> Any:
    """An ``IResolver`` asking only ``server`` (an IP address and port), UDP then TCP, on
    *reactor* (``IReactorUDP``, ``IReactorTCP``, ``IReactorTime``)."""
    return client.Resolver(servers=[server], reactor=reactor, timeout=DNS_TIMEOUT)


@implementer(IHostResolution)
class _Resolution:
    """One A/AAAA resolution in progress (it cannot be cancelled; it is bounded instead)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        """Nothing to do: the lookups end by themselves within the DNS timeout."""


@implementer(IHostnameResolver)
class DNSHostnameResolver:
    """Resolves host names to addresses with a ``twisted.names`` ``IResolver`` (A and AAAA).

    ``HostnameEndpoint`` uses it (see :func:`with_name_resolver`) when the SRV lookups go to a
    given DNS server, so that the SRV targets' addresses come from that same server rather
    than from the system resolver.
    """

    def __init__(self, resolver: Any, timeout: Sequence[int] = DNS_TIMEOUT) -> None:
        self.resolver = resolver
        self.timeout = tuple(timeout)

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Sequence[type] | None = None,
        transportSemantics: str = "TCP",
    ) -> IResolutionReceiver:
        """Look up A and AAAA records of ``hostName`` together; report every address found."""
        resolutionReceiver.resolutionBegan(_Resolution(hostName))
        try:
            literal = ipaddress.ip_address(hostName)
        except ValueError:
            literal = None
        if literal is not None:
            kind = IPv4Address if literal.version == 4 else IPv6Address
            if addressTypes is None or kind in addressTypes:
                resolutionReceiver.addressResolved(kind(transportSemantics, hostName, portNumber))
            resolutionReceiver.resolutionComplete()
            return resolutionReceiver
        lookups: list[Deferred[list[Any]]] = []
        if addressTypes is None or IPv4Address in addressTypes:
            lookups.append(
                self.resolver.lookupAddress(hostName, timeout=self.timeout).addCallback(
                    lambda result: [
                        IPv4Address(transportSemantics, r.payload.dottedQuad(), portNumber)
                        for r in result[0]
                        if r.type == dns.A
                    ]
                )
            )
        if addressTypes is None or IPv6Address in addressTypes:
            lookups.append(
                self.resolver.lookupIPV6Address(hostName, timeout=self.timeout).addCallback(
                    lambda result: [
                        IPv6Address(
                            transportSemantics,
                            socket.inet_ntop(socket.AF_INET6, r.payload.address),
                            portNumber,
                        )
                        for r in result[0]
                        if r.type == dns.AAAA
                    ]
                )
            )

        def deliver(results: list[tuple[bool, Any]]) -> None:
            for ok, addresses in results:
                for address in addresses if ok else ():
                    resolutionReceiver.addressResolved(address)
            resolutionReceiver.resolutionComplete()

        DeferredList(lookups, consumeErrors=True).addCallback(deliver)
        return resolutionReceiver


@implementer(IReactorPluggableNameResolver)
class _NameResolvingReactor:
    """The reactor with another ``nameResolver``: where ``HostnameEndpoint`` takes it from."""

    def __init__(self, reactor: Any, name_resolver: IHostnameResolver) -> None:
        self._reactor = reactor
        self.nameResolver = name_resolver

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        """Replace the name resolver (of this view only); return the previous one."""
        previous, self.nameResolver = self.nameResolver, resolver
        return previous

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reactor, name)


def with_name_resolver(reactor: Any, name_resolver: IHostnameResolver | None) -> Any:
    """``reactor`` as ``HostnameEndpoint`` should see it: resolving names with ``name_resolver``
    (the reactor itself when that is None: the system resolver)."""
    if name_resolver is None:
        return reactor
    return _NameResolvingReactor(reactor, name_resolver)


class ServerLocator:
    """RFC 3263 §4 server location for an AOR: a ``Resolver`` for ``client_endpoint``.

    Calling it with an AOR returns a Deferred firing with the ``(host, port)`` targets to try
    in order (see the module docstring), or failing with :class:`ServiceNotOffered`.

    ``dns_resolver`` is the ``twisted.names`` ``IResolver`` for SRV lookups; None (the
    default) uses the system's ``/etc/resolv.conf`` and ``/etc/hosts`` through
    ``client.createResolver(reactor=reactor)``, made at the first lookup (so ``reactor``
    is then required: it is never the global one by default), and leaves the targets' A/AAAA
    lookups to the reactor's resolver.  With a given ``dns_resolver`` the targets are resolved
    through it too (:attr:`hostname_resolver`).  ``rng`` is the random source of the
    RFC 2782 weighting.
    """

    def __init__(
        self,
        dns_resolver: Any = None,
        *,
        reactor: Any = None,
        rng: random.Random | None = None,
        timeout: Sequence[int] = DNS_TIMEOUT,
        max_targets: int = MAX_TARGETS,
    ) -> None:
        if dns_resolver is None and reactor is None:
            raise TypeError("ServerLocator needs a dns_resolver or the reactor= to make one on")
        self._dns_resolver = dns_resolver
        self._reactor = reactor
        self.rng = rng or random.Random()
        self.timeout = tuple(timeout)
        self.max_targets = max_targets
        self.hostname_resolver = (
            DNSHostnameResolver(dns_resolver, self.timeout) if dns_resolver is not None else None
        )
        #: host -> (transport, SRV name) that NAPTR chose (:meth:`choose_transport`).
        self._chosen: dict[str, tuple[str, str]] = {}

    @property
    def dns_resolver(self) -> ResolverBase:
        """The ``IResolver`` asked for SRV records (the system's unless one was given)."""
        if self._dns_resolver is None:
            self._dns_resolver = client.createResolver(reactor=self._reactor)
        return self._dns_resolver

    def choose_transport(self, aor: SipURI) -> Deferred[str]:
        """The transport to reach ``aor``'s server with (RFC 3263 §4.1): ``TLS``, ``TCP``
        or ``UDP``; see the module docstring.  Where NAPTR chose it, the next
        :meth:`__call__` for the AOR looks up the SRV name NAPTR gave."""
        if not naptr_applies(aor):
            return succeed(aor.transport)
        host = str(aor.maddr.host).rstrip(".")
        secure = aor.scheme == "sips"
        d = self.dns_resolver.lookupNamingAuthorityPointer(host, timeout=self.timeout)
        d.addCallbacks(
            self._naptr_answer, self._naptr_failed, callbackArgs=(host, secure),
            errbackArgs=(host,),
        )
        return d

    def _naptr_answer(
        self, result: tuple[list[dns.RRHeader], list[Any], list[Any]], host: str, secure: bool
    ) -> str:
        records = [answer.payload for answer in result[0] if answer.type == dns.NAPTR]
        ordered = order_naptr_records(records, secure)
        if not ordered:
            if records:
                log.info(
                    "DNS NAPTR {host}: no SIP service we support; SIP over TLS "
                    "(RFC 3263 §4.1)", host=host,
                )
            self._chosen.pop(host, None)
            return "TLS"
        transport, name = ordered[0]
        while len(self._chosen) >= _MAX_REMEMBERED and host not in self._chosen:
            del self._chosen[next(iter(self._chosen))]
        self._chosen[host] = (transport, name)
        log.info(
            "DNS NAPTR {host}: SIP over {transport}, SRV {name} (RFC 3263 §4.1)",
            host=host, transport=transport, name=name,
        )
        return transport

    def _naptr_failed(self, failure: Failure, host: str) -> str:
        reason, no_such_name = _describe_dns_failure(failure)
        emit = log.info if no_such_name else log.warn
        emit("DNS NAPTR lookup of {host}: {reason}; SIP over TLS (RFC 3263 §4.1)",
             host=host, reason=reason)
        self._chosen.pop(host, None)
        return "TLS"

    def __call__(self, aor: SipURI) -> Deferred[list[tuple[str, int]]]:
        """The targets for ``aor``, in the order to try them (RFC 3263 §4.2), over the
        transport :meth:`choose_transport` chose for it (else the AOR's)."""
        transport = aor.transport
        target = aor.maddr.host
        host = str(target).rstrip(".")
        chosen = self._chosen.get(host) if naptr_applies(aor) else None
        if chosen is not None:
            transport = chosen[0]
        default_port = _DEFAULT_PORTS.get(transport, 5060)
        port = aor.port if aor.port_given else default_port
        if isinstance(target, ipaddress.IPv4Address | ipaddress.IPv6Address) or aor.port_given:
            return succeed([(str(target), port)])
        name = chosen[1] if chosen is not None else srv_name(host, transport)
        d = self.dns_resolver.lookupService(name, timeout=self.timeout)
        d.addCallbacks(
            self._from_answer,
            self._lookup_failed,
            callbackArgs=(name, host, transport, default_port),
            errbackArgs=(name, host, default_port),
        )
        return d

    def _from_answer(
        self,
        result: tuple[list[dns.RRHeader], list[Any], list[Any]],
        name: str,
        host: str,
        transport: str,
        default_port: int,
    ) -> list[tuple[str, int]]:
        records = [answer.payload for answer in result[0] if answer.type == dns.SRV]
        if not records:
            log.info(
                "no DNS SRV records for {name}: connecting to {host}:{port} (RFC 3263 §4.2)",
                name=name,
                host=host,
                port=default_port,
            )
            return [(host, default_port)]
        usable = [record for record in records if _target_text(record)]
        if not usable:
            kind = f"SIP over {transport}"
            raise ServiceNotOffered(
                f"DNS SRV {name} says {kind} is not offered at {host} (target '.', RFC 2782)"
            )
        ordered = order_srv_records(usable, self.rng, self.max_targets)
        targets = [(_target_text(record), int(record.port)) for record in ordered]
        log.info(
            "DNS SRV {name}: {targets}",
            name=name,
            targets=", ".join(f"{h}:{p}" for h, p in targets),
        )
        return targets

    def _lookup_failed(
        self, failure: Failure, name: str, host: str, default_port: int
    ) -> list[tuple[str, int]]:
        reason, no_such_name = _describe_dns_failure(failure)
        emit = log.info if no_such_name else log.warn
        emit(
            "DNS SRV lookup of {name}: {reason}; connecting to {host}:{port} (RFC 3263 §4.2)",
            name=name,
            reason=reason,
            host=host,
            port=default_port,
        )
        return [(host, default_port)]
