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

The transport is never chosen by NAPTR (RFC 3263 §4.1): the AOR names it (TLS by default,
``;transport=tcp`` or ``;transport=udp``; a ``sips:`` AOR is TLS whatever it says, never
downgraded), so the transport is always known before DNS is asked, and §4.1 allows
skipping NAPTR then.

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
    "DNSHostnameResolver",
    "ServerLocator",
    "ServiceNotOffered",
    "dns_server_resolver",
    "order_srv_records",
    "srv_name",
]

log = Logger()

#: Seconds before each retry of one DNS query; it fails after their sum (4 s per server).
DNS_TIMEOUT = (1, 3)
#: At most this many SRV targets are tried per connect (bounds a hostile or broken zone).
MAX_TARGETS = 16

_DEFAULT_PORTS = {"TLS": 5061, "TCP": 5060, "UDP": 5060}


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

    @property
    def dns_resolver(self) -> ResolverBase:
        """The ``IResolver`` asked for SRV records (the system's unless one was given)."""
        if self._dns_resolver is None:
            self._dns_resolver = client.createResolver(reactor=self._reactor)
        return self._dns_resolver

    def __call__(self, aor: SipURI) -> Deferred[list[tuple[str, int]]]:
        """The targets for ``aor``, in the order to try them (RFC 3263 §4.2)."""
        transport = aor.transport
        default_port = _DEFAULT_PORTS.get(transport, 5060)
        target = aor.maddr.host
        port = aor.port if aor.port_given else default_port
        if isinstance(target, ipaddress.IPv4Address | ipaddress.IPv6Address) or aor.port_given:
            return succeed([(str(target), port)])
        host = str(target).rstrip(".")
        name = srv_name(host, transport)
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
