"""Connecting a UA to its registrar: endpoints, TLS identity, reconnection and :func:`run`.

* :func:`client_endpoint` turns an AOR into an ``IStreamClientEndpoint``: TLS (``sips:``, and
  ``sip:`` without a ``transport`` parameter) or plain TCP (``;transport=tcp``), IPv4/IPv6
  literals and hostnames (``HostnameEndpoint``).  The registrar is found with DNS SRV
  (RFC 3263, :class:`voiptwisted.sip.locate.ServerLocator`) unless the AOR has a port or an
  IP address; the targets are tried in order until one connects (RFC 3263 §4.3).
* The server certificate is verified with service_identity against the SIP domain
  (RFC 5922 §4.1, §7.2), never against the resolved IP address nor the SRV target's host
  name, for every target.  Verification failures produce one log line that names the
  problem (hostname mismatch, unknown CA, expired ...).
* :func:`client_service` keeps the flow up with ``ClientService`` and exponential backoff
  (1 s doubling to 60 s, with jitter); every new flow re-registers through the protocol's
  ``registration`` hook.
* :func:`run` is the library entry point: connect, register, fire with the protocol.
* :func:`connect` opens one flow to an endpoint or straight to a ``sip:``/``sips:`` URI,
  without registering (a direct call needs no registrar).
* ``sip:...;transport=udp`` registers over UDP instead (RFC 3261 §18):
  :class:`SIPDatagramClientService` binds one socket with the datagram adapter
  (:mod:`voiptwisted.sip.datagram`) and keeps it alive with RFC 5626 §4.4.2 STUN.
* An AOR naming no transport and no port takes the transport DNS NAPTR chooses (RFC 3263
  §4.1, :meth:`voiptwisted.sip.locate.ServerLocator.choose_transport`; a ``sips:`` AOR only
  ever TLS): :class:`TransportChoosingService` builds the flow's service once it is known.

Which name is verified: the AOR's host (a domain, or an IP literal checked against the
certificate's IP SANs).  When the AOR carries ``;maddr=`` we connect there; if that maddr is a
*hostname* it names the server explicitly and the certificate must be valid for it, while an
IP-literal maddr only says where to connect and the AOR domain is still verified.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import ssl as stdlib_ssl
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from OpenSSL import SSL, crypto
from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import Service
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IHandshakeListener,
    IHostnameResolver,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from voiptwisted.sip.datagram import DatagramKeepalive, SIPDatagramProtocol
from voiptwisted.sip.digest import Credentials
from voiptwisted.sip.keepalive import FlowKeepalive
from voiptwisted.sip.locate import (
    ServerLocator,
    dns_server_resolver,
    naptr_applies,
    with_name_resolver,
)
from voiptwisted.sip.protocol import SessionInitiationProtocol, SIPClientFactory
from voiptwisted.sip.registration import Registration, RegistrationFailed, normalize_instance_id
from voiptwisted.sip.uri import SipURI

__all__ = [
    "DIRECT_AOR",
    "RegistrationFailed",
    "SIPClientEndpoint",
    "SIPClientService",
    "SIPDatagramClientService",
    "TLSVerificationFailed",
    "build_client",
    "client_endpoint",
    "client_service",
    "connect",
    "describe_tls_failure",
    "load_instance_id",
    "retry_policy",
    "run",
    "tls_server_name",
]

log = Logger()

Resolver = Callable[[SipURI], Sequence[tuple[str, int]] | Deferred[Sequence[tuple[str, int]]]]

INSTANCE_ID_FILE = "instance-id"

# OpenSSL X509_V_ERR_* codes that mean "we do not trust who signed this".
_UNKNOWN_CA_CODES = frozenset({2, 18, 19, 20, 21})


class TLSVerificationFailed(Exception):
    """The registrar's certificate was refused; ``str()`` names the problem."""


def retry_policy(jitter: Callable[[], float] | None = None) -> Callable[[int], float]:
    """Reconnect delays for ``ClientService``: 1 s doubling to 60 s, plus up to 1 s of jitter.

    ``ClientService`` passes the number of consecutive failures (1 for the first retry), so
    retry *n* waits ``min(2 ** (n - 1), 60)`` seconds before jitter.
    """
    if jitter is None:
        return backoffPolicy(initialDelay=0.5, factor=2.0, maxDelay=60.0)
    return backoffPolicy(initialDelay=0.5, factor=2.0, maxDelay=60.0, jitter=jitter)


def load_instance_id(state_dir: str) -> str:
    """The UA's stable ``+sip.instance`` URN (RFC 5626 §4.1), created once in ``state_dir``.

    The file ``instance-id`` holds one UUID; it is written atomically the first time, and a
    corrupt file is replaced.  Returns ``urn:uuid:<uuid>``.
    """
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, INSTANCE_ID_FILE)
    try:
        with open(path, encoding="ascii") as handle:
            return normalize_instance_id(handle.read(200))
    except (OSError, ValueError, UnicodeDecodeError):
        pass
    value = f"urn:uuid:{uuid.uuid4()}"
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="ascii") as handle:
        handle.write(value + "\n")
    os.replace(temporary, path)
    return value


def tls_server_name(aor: SipURI) -> str:
    """The name the server certificate must match (RFC 5922 §7.2): see the module docstring."""
    maddr = aor.parameters.get("maddr")
    if maddr:
        host = aor.maddr.host
        if not isinstance(host, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return str(host)
    return str(aor.host)


def _load_pem_certificates(path: str) -> list[ssl.Certificate]:
    with open(path, "rb") as handle:
        data = handle.read(1 << 20)
    blocks = re.findall(
        rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", data, flags=re.DOTALL
    )
    if not blocks:
        raise ValueError(f"no PEM certificate in CA file {path!r}")
    return [ssl.Certificate.loadPEM(block) for block in blocks]


@implementer(IOpenSSLTrustRoot)
class _PlatformPlusCertificates:
    """Trust the platform's CA store and, in addition, the given certificates."""

    def __init__(self, certificates: Sequence[ssl.Certificate]) -> None:
        self._certificates = list(certificates)

    def _addCACertsToContext(self, context: SSL.Context) -> None:
        context.set_default_verify_paths()
        store = context.get_cert_store()
        for certificate in self._certificates:
            store.add_cert(certificate.original)


def _trust_root(ca_file: str | None) -> Any:
    if ca_file is None:
        return ssl.platformTrust()
    return _PlatformPlusCertificates(_load_pem_certificates(ca_file))


def client_endpoint(
    reactor: Any,
    aor: SipURI,
    *,
    ca_file: str | None = None,
    verify: bool = True,
    resolver: Resolver | None = None,
    dns_server: tuple[str, int] | None = None,
    timeout: float = 30.0,
    transport: str | None = None,
) -> SIPClientEndpoint:
    """An endpoint for the flow to ``aor``'s registrar.

    TLS for ``sips:`` and for ``sip:`` without ``transport``, plain TCP for
    ``;transport=tcp``; UDP is refused (this library keeps one connection-oriented flow,
    RFC 5626).  Where to connect is the ``resolver``'s answer: by default a
    :class:`~voiptwisted.sip.locate.ServerLocator` (DNS SRV, RFC 3263) asking the system's
    DNS servers, or only ``dns_server`` (an IP address and port) when given -- the SRV
    targets' addresses are then looked up there too.  Any callable taking the AOR and
    returning (or firing with) a list of ``(host, port)`` to try in order can replace it.
    ``ca_file`` adds a private CA to the platform trust store; ``verify=False`` disables
    certificate checks and logs a warning on every connect.  ``transport`` ("TLS" or
    "TCP") overrides the AOR's: what RFC 3263 §4.1 NAPTR chose for it.
    """
    transport = transport or aor.transport
    if transport not in ("TLS", "TCP"):
        raise ValueError(f"unsupported SIP transport {transport!r}: use TLS or TCP")
    if resolver is None:
        resolver = ServerLocator(
            dns_server_resolver(dns_server, reactor) if dns_server is not None else None,
            reactor=reactor,
        )
    name_resolver = resolver.hostname_resolver if isinstance(resolver, ServerLocator) else None
    creator = None
    server_name = tls_server_name(aor)
    if transport == "TLS":
        if verify:
            creator = ssl.optionsForClientTLS(server_name, trustRoot=_trust_root(ca_file))
        else:
            creator = ssl.CertificateOptions(verify=False)
    return SIPClientEndpoint(
        reactor,
        aor,
        creator,
        resolver=resolver,
        name_resolver=name_resolver,
        insecure=transport == "TLS" and not verify,
        server_name=server_name,
        ca_file=ca_file,
        timeout=timeout,
    )


@implementer(IStreamClientEndpoint)
class SIPClientEndpoint:
    """Tries the resolver's targets in order; wraps TLS; reports certificate failures.

    Every target gets the same TLS options, so each is verified against ``server_name`` (the
    SIP domain), whichever host DNS pointed to.  ``name_resolver`` resolves the targets' host
    names (None: the reactor's); ``tried`` lists the targets of the latest connect attempt.
    ``tls_failure_observers`` are called with a :class:`TLSVerificationFailed` when a
    handshake fails verification (``run`` uses that to fail fast before registration).
    """

    def __init__(
        self,
        reactor: Any,
        aor: SipURI,
        creator: Any,
        *,
        resolver: Resolver,
        name_resolver: IHostnameResolver | None = None,
        insecure: bool,
        server_name: str,
        ca_file: str | None,
        timeout: float,
    ) -> None:
        self.reactor = reactor
        self.aor = aor
        self.creator = creator
        self.resolver = resolver
        self.name_resolver = name_resolver
        self.tried: list[str] = []
        self.insecure = insecure
        self.server_name = server_name
        self.ca_file = ca_file
        self.timeout = timeout
        self.tls_failure_observers: list[Callable[[TLSVerificationFailed], None]] = []
        #: Called with each flow's protocol when that flow is lost (``when_disconnected``).
        self.flow_lost_observers: list[Callable[[Any], None]] = []
        #: The target the latest connect reached, and how many the resolver gave.
        self.current: tuple[str, int] | None = None
        self.target_count = 0
        # RFC 3263 §4.3 failover: targets to try last once, and until when to skip others.
        self._demoted: set[tuple[str, int]] = set()
        self._skip_until: dict[tuple[str, int], float] = {}

    @property
    def is_tls(self) -> bool:
        """True when the flow is TLS."""
        return self.creator is not None

    def __repr__(self) -> str:
        kind = "TLS" if self.is_tls else "TCP"
        return f"<SIPClientEndpoint {kind} {self.aor.aor} verify={self.server_name!r}>"

    def target_endpoint(self, host: str, port: int) -> IStreamClientEndpoint:
        """The endpoint for one resolved target (TCP, wrapped in TLS when needed)."""
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            with_name_resolver(self.reactor, self.name_resolver), host, port, timeout=self.timeout
        )
        if self.creator is not None:
            endpoint = wrapClientTLS(self.creator, endpoint)
        return endpoint

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """Connect to the first resolved target that accepts (RFC 3263 §4.3 order)."""
        return self._connect(protocolFactory).addCallback(lambda proxy: proxy.wrapped)

    def connect_verified(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        """Like :meth:`connect`, but over TLS fires only once the handshake has verified the
        server (RFC 5922 §7.2); fails with :class:`TLSVerificationFailed` when it is refused
        and with the connection's error when the flow is lost before that."""
        return self._connect(protocolFactory).addCallback(lambda proxy: proxy.when_verified())

    def _connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        if self.insecure:
            log.warn(
                "TLS certificate verification is DISABLED for {aor}: anyone on the path can "
                "impersonate the server",
                aor=self.aor.aor,
            )
        factory = _ReportingFactory(protocolFactory, self)
        self.tried = []
        d = maybeDeferred(self.resolver, self.aor)

        def attempt(targets: Sequence[tuple[str, int]]) -> Deferred[IProtocol]:
            remaining = self._order(list(targets)[:16])
            if not remaining:
                raise ValueError(f"resolver returned no address for {self.aor.aor}")

            def next_target(failure: Failure | None) -> Deferred[IProtocol]:
                if not remaining:
                    return failure  # type: ignore[return-value]
                host, port = remaining.pop(0)
                if failure is not None:
                    log.info(
                        "connecting to {failed} failed ({why}); trying {host}:{port} next",
                        failed=self.tried[-1],
                        why=failure.getErrorMessage(),
                        host=host,
                        port=port,
                    )
                self.tried.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
                self.current = (host, port)
                attempt_d = self.target_endpoint(host, port).connect(factory)
                return attempt_d.addErrback(next_target)

            return next_target(None)

        d.addCallback(attempt)
        return d

    def _order(self, targets: list[tuple[str, int]]) -> list[tuple[str, int]]:
        """*targets* in RFC 3263 order, those a server failure demoted last, those in their
        Retry-After left out (all of them, if nothing else is left)."""
        now = self.reactor.seconds()
        self._skip_until = {t: end for t, end in self._skip_until.items() if end > now}
        self.target_count = len(targets)
        usable = [t for t in targets if t not in self._skip_until] or targets
        demoted, self._demoted = self._demoted, set()
        return [t for t in usable if t not in demoted] + [t for t in usable if t in demoted]

    def fail_current(self, retry_after: float | None = None) -> bool:
        """The server of the current flow failed (503, 408, no answer, transport failure):
        the next connect starts at the next target, and with *retry_after* this one is
        skipped until then (RFC 3263 §4.3, RFC 3261 §21.5.4).  True when there is another
        target to move to."""
        current = self.current
        if current is None or self.target_count < 2:
            return False
        if retry_after:
            self._skip_until[current] = self.reactor.seconds() + retry_after
        else:
            self._demoted.add(current)
        return True

    def report(self, transport: Any, reason: Failure) -> TLSVerificationFailed | None:
        """Log one line for a certificate failure on ``transport`` and tell the observers;
        returns that failure (None when the flow was not lost to one)."""
        text = describe_tls_failure(reason, transport, ca_file=self.ca_file)
        if text is None:
            return None
        peer = _peer_text(transport)
        error = TLSVerificationFailed(f"TLS to {peer} refused: {text}")
        log.error("{error}", error=str(error))
        for observer in list(self.tls_failure_observers):
            observer(error)
        return error


@implementer(IProtocolFactory)
class _ReportingFactory:
    """Builds :class:`_ReportingProxy` around the given factory's protocols."""

    def __init__(self, factory: IProtocolFactory, endpoint: SIPClientEndpoint) -> None:
        self.factory = factory
        self.endpoint = endpoint

    def doStart(self) -> None:
        self.factory.doStart()

    def doStop(self) -> None:
        self.factory.doStop()

    def buildProtocol(self, addr: Any) -> IProtocol | None:
        built = self.factory.buildProtocol(addr)
        if built is None:
            return None
        return _ReportingProxy(built, self.endpoint)


@implementer(IProtocol, IHandshakeListener)
class _ReportingProxy:
    """Passes everything to the real protocol; inspects why a TLS flow was lost."""

    def __init__(self, wrapped: IProtocol, endpoint: SIPClientEndpoint) -> None:
        self.wrapped = wrapped
        self.endpoint = endpoint
        self.transport: Any = None
        # The flow's verification outcome (see when_verified): None while it is open.
        self._verified: Failure | bool | None = (
            None if getattr(endpoint, "is_tls", False) else True
        )
        self._verify_waiters: list[Deferred[Any]] = []

    def when_verified(self) -> Deferred[Any]:
        """Fires with the wrapped protocol once the flow is usable (at once over TCP; over
        TLS once the handshake verified the server), or fails with why it was lost."""
        if self._verified is True:
            return succeed(self.wrapped)
        if isinstance(self._verified, Failure):
            return fail(self._verified)
        waiter: Deferred[Any] = Deferred(lambda d: self._abort_unverified(d))
        self._verify_waiters.append(waiter)
        return waiter

    def _abort_unverified(self, waiter: Deferred[Any]) -> None:
        """Cancelled while the handshake runs: the flow is of no use to anyone, drop it."""
        self._verify_waiters.remove(waiter)
        if self.transport is not None:
            getattr(self.transport, "abortConnection", self.transport.loseConnection)()

    def _settle(self, outcome: Failure | bool) -> None:
        if self._verified is not None:
            return
        self._verified = outcome
        waiters, self._verify_waiters = self._verify_waiters, []
        for waiter in waiters:
            if isinstance(outcome, Failure):
                waiter.errback(outcome)
            else:
                waiter.callback(self.wrapped)

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self.wrapped.makeConnection(transport)

    def connectionMade(self) -> None:
        """Unused: ``makeConnection`` hands the transport to the wrapped protocol."""

    def dataReceived(self, data: bytes) -> None:
        self.wrapped.dataReceived(data)

    def handshakeCompleted(self) -> None:
        """Passes TLS's handshake notice on (the TLS layer only tells its direct protocol).

        Looked up by name: ``ClientService`` wraps our protocol in a proxy that forwards
        attributes but declares no interface, and the protocol's TLS-handshake timeout
        is stopped by this notice.
        """
        listener = getattr(self.wrapped, "handshakeCompleted", None)
        if callable(listener):
            listener()
        self._settle(True)

    def connectionLost(self, reason: Failure) -> None:
        refused = None
        try:
            if self.endpoint.is_tls:
                refused = self.endpoint.report(self.transport, reason)
        finally:
            self.wrapped.connectionLost(reason)
            self._settle(Failure(refused) if refused is not None else reason)
            for observer in list(self.endpoint.flow_lost_observers):
                observer(self.wrapped)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.wrapped, name)


_X509_ERRORS = {
    2: "unable to get issuer certificate",
    9: "certificate is not yet valid",
    10: "certificate has expired",
    18: "self-signed certificate",
    19: "self-signed certificate in chain",
    20: "unable to get local issuer certificate",
    21: "unable to verify the first certificate",
    23: "certificate revoked",
    26: "unsupported certificate purpose",
}


def describe_tls_failure(
    reason: Failure, transport: Any = None, *, ca_file: str | None = None
) -> str | None:
    """Name the certificate problem behind a lost TLS flow, or None if it is not one.

    Hostname mismatches come from service_identity (``VerificationError``); chain problems
    from OpenSSL's "certificate verify failed", which we re-check against the same trust
    anchors to say *why* (unknown CA, expired, self-signed ...).
    """
    value = reason.value
    if type(value).__name__ == "VerificationError":
        name = _mismatched_names(value)
        return f"hostname mismatch: the certificate is not valid for {name}"
    if not isinstance(value, SSL.Error):
        return None
    text = _openssl_reasons(value)
    if "certificate verify failed" not in text:
        return f"TLS handshake failed: {text or type(value).__name__}"
    detail = _chain_problem(transport, ca_file)
    if detail is None:
        return "certificate not trusted (unknown CA, expired or self-signed)"
    code, message, subject = detail
    kind = "unknown CA" if code in _UNKNOWN_CA_CODES else "certificate rejected"
    return f"{kind}: {message} (certificate {subject})"


def _mismatched_names(value: Exception) -> str:
    names = []
    for error in getattr(value, "errors", ()):
        identity = getattr(error, "mismatched_id", None)
        for attribute in ("hostname", "ip"):
            item = getattr(identity, attribute, None)
            if item is not None:
                names.append(item.decode() if isinstance(item, bytes) else str(item))
    return repr(names[0]) if names else "the server name"


def _openssl_reasons(value: SSL.Error) -> str:
    parts = []
    for item in value.args[0] if value.args and isinstance(value.args[0], list) else ():
        if isinstance(item, tuple) and item:
            parts.append(str(item[-1]))
    return ", ".join(parts) if parts else str(value)


def _chain_problem(transport: Any, ca_file: str | None) -> tuple[int, str, str] | None:
    try:
        chain = transport.getHandle().get_peer_cert_chain()
    except Exception:
        return None
    if not chain:
        return None
    store = crypto.X509Store()
    paths = stdlib_ssl.get_default_verify_paths()
    with contextlib.suppress(Exception):  # the platform store may be absent
        store.load_locations(paths.cafile, paths.capath)
    if ca_file is not None:
        try:
            for certificate in _load_pem_certificates(ca_file):
                store.add_cert(certificate.original)
        except (OSError, ValueError):
            return None
    leaf, intermediates = chain[0], chain[1:]
    try:
        subject = leaf.to_cryptography().subject.rfc4514_string()
    except Exception:
        subject = "of the server"
    try:
        crypto.X509StoreContext(store, leaf, intermediates).verify_certificate()
    except crypto.X509StoreContextError as exc:
        code = exc.errors[0] if exc.errors else -1
        message = exc.errors[2] if len(exc.errors) > 2 else _X509_ERRORS.get(code, str(exc))
        return code, str(message), subject
    return None


def _peer_text(transport: Any) -> str:
    try:
        peer = transport.getPeer()
        host, port = peer.host, peer.port
    except Exception:
        return "the registrar"
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def client_service(
    endpoint: IStreamClientEndpoint,
    factory: IProtocolFactory,
    *,
    reactor: IReactorTime,
    policy: Callable[[int], float] | None = None,
) -> ClientService:
    """``ClientService`` over ``endpoint`` with :func:`retry_policy` backoff, its retries
    timed on *reactor*."""
    return ClientService(
        endpoint, factory, retryPolicy=policy or retry_policy(), clock=reactor
    )


class _FlowFactory(Factory):
    """Builds one SessionInitiationProtocol per flow, wired to the shared registration.

    Not ``noisy``: "Starting/Stopping factory" on every reconnect attempt buried the one
    line per attempt that matters (ClientService's "Scheduling retry").
    """

    noisy = False
    #: Its flows are ours, one registration's: a new one carries on the calls of a dead one.
    outbound = True

    def __init__(self, build: Callable[[], Any], client: SIPClientService) -> None:
        self._build = build
        self._client = client

    def buildProtocol(self, addr: Any) -> Any:
        protocol = self._build()
        protocol.factory = self
        protocol.registration = self._client.registration
        protocol.keepalive = self._client.keepalive
        try:
            protocol.service = self._client
        except AttributeError:
            log.warn("protocol has no 'service' attribute; keep the SIPClientService handle")
        return protocol


def _when_done(d: Deferred[Any]) -> Deferred[None]:
    """A new Deferred firing (with None) when ``d`` has fired, leaving ``d``'s chain intact."""
    waiter: Deferred[None] = Deferred()

    def relay(result: object) -> object:
        waiter.callback(None)
        return result

    d.addBoth(relay)
    return waiter


class SIPClientService(Service):
    """The running UA: ClientService (reconnecting flow) + Registration + FlowKeepalive.

    ``startService`` connects; :meth:`when_registered` fires with the protocol once the
    registrar accepted us.  ``stopService`` un-registers (bounded by the registration's
    timeout), then closes the flow and stops reconnecting.  It is a Twisted ``Service``, so it
    can live inside a ``MultiService`` (twistd).
    """

    def __init__(
        self,
        reactor: Any,
        endpoint: SIPClientEndpoint,
        build_protocol: Callable[[], Any],
        registration: Registration,
        keepalive: FlowKeepalive | None,
        *,
        policy: Callable[[int], float] | None = None,
    ) -> None:
        self.reactor = reactor
        self.endpoint = endpoint
        self.registration = registration
        self.keepalive = keepalive
        self.factory = _FlowFactory(build_protocol, self)
        self._base_policy = policy or retry_policy()
        self._barren_flows = 0
        self._successes_seen = 0
        self.client = client_service(
            endpoint, self.factory, reactor=reactor, policy=self._retry_delay
        )
        self._stopping: Deferred[Any] | None = None
        if getattr(registration, "failover", False) is None:
            registration.failover = self.fail_over

    def fail_over(self, protocol: Any, retry_after: float | None = None) -> bool:
        """Move to the next RFC 3263 server after a 503/408/transport failure (§4.3);
        True when the flow is being moved (the registration then registers the next one).

        A flow still carrying calls stays (dropping it would cut them); otherwise it is
        closed and the reconnecting client opens the next flow to the next target.
        """
        if getattr(protocol, "dialog_count", 0):
            return False
        fail_current = getattr(self.endpoint, "fail_current", None)
        if fail_current is None or not fail_current(retry_after):
            return False
        transport = getattr(protocol, "transport", None)
        if transport is not None:
            transport.loseConnection()
        return True

    def _retry_delay(self, attempt: int) -> float:
        """Back off across flows that connected but never registered.

        ``ClientService`` counts failed *connections* and resets on every TCP connect, so a
        flow refused after connecting (bad certificate, registrar closing on us) would be
        retried every second forever.  Such barren flows keep the backoff growing until a
        registration succeeds.
        """
        successes = self.registration.success_count
        if attempt == 1 and successes == self._successes_seen:
            self._barren_flows += 1
        elif successes != self._successes_seen:
            self._barren_flows = 0
        self._successes_seen = successes
        return self._base_policy(attempt + self._barren_flows)

    def startService(self) -> None:
        """Start connecting (and reconnecting)."""
        super().startService()
        self._stopping = None
        self.client.startService()

    def stopService(self) -> Deferred[None]:
        """Un-register (REGISTER Expires: 0), then close the flow for good.

        Idempotent: a second call while stopped (or stopping) fires when the first is done.
        """
        if self._stopping is not None:
            return _when_done(self._stopping)
        super().stopService()
        d = self.registration.stop()
        if self.keepalive is not None:
            self.keepalive.stop()
        # Never stop ClientService from inside one of its own callbacks (its state machine is
        # not re-entrant): the stop runs in the next reactor turn.
        d.addCallback(lambda _: deferLater(self.reactor, 0, self.client.stopService))
        self._stopping = d
        return _when_done(d)

    def start(self) -> Deferred[Any]:
        """Start and fire with the registered protocol.

        Fails (and stops the service) if the first connection attempt fails, if the
        certificate is refused before the first registration, or if the registrar refuses
        us (``RegistrationFailed``).  After the first success, reconnects are silent.

        Cancelling the Deferred before it fired fails it with ``CancelledError`` at once
        and stops the service (:meth:`stopService`): no further connect attempt nor
        REGISTER, and the flow is closed.  A REGISTER already sent is not abandoned
        (RFC 3261 §10.2: its registrar may bind us before its answer arrives): its final
        answer is awaited, for up to the registration's ``unregister_timeout``, so that a
        binding it made is removed (``Expires: 0``) before the flow closes.
        """
        done: list[bool] = []

        def cancel(_: Deferred[Any]) -> None:
            if done:
                return
            done.append(True)
            self.endpoint.tls_failure_observers.remove(on_tls)
            _stop_after_register(self, self.registration, self.reactor)

        ready: Deferred[Any] = Deferred(cancel)

        def succeed_once(protocol: Any) -> None:
            if not done:
                done.append(True)
                self.endpoint.tls_failure_observers.remove(on_tls)
                ready.callback(protocol)

        def fail_once(failure: Failure | Exception) -> None:
            if done:
                return
            done.append(True)
            self.endpoint.tls_failure_observers.remove(on_tls)
            self.stopService().addBoth(lambda _: ready.errback(failure))

        def on_tls(error: TLSVerificationFailed) -> None:
            fail_once(Failure(error))

        self.endpoint.tls_failure_observers.append(on_tls)
        self.registration.when_registered().addCallbacks(succeed_once, fail_once)
        self.client.whenConnected(failAfterFailures=1).addErrback(fail_once)
        self.startService()
        return ready


class SIPDatagramClientService(Service):
    """The running UA over UDP (``;transport=udp``): one socket, Registration, STUN keep-alive.

    RFC 3263 finds the registrar (``_sip._udp`` SRV, port 5060); the first target's
    address is the socket's :attr:`SIPDatagramProtocol.peer <voiptwisted.sip.datagram.
    SIPDatagramProtocol.peer>`, the flow every request of ours goes to (RFC 5626: the
    registrar or outbound proxy relays our calls).  The socket binds an ephemeral port on the
    local address that routes to the registrar.  It offers what the service reads of a
    :class:`SIPClientService`: :meth:`start`, ``registration``, ``keepalive``,
    ``client.whenConnected`` and ``endpoint.tried``.

    Failover (RFC 3263 §4.3, :meth:`fail_over`): when the registrar answers 503 or 408, or
    does not answer, the socket's peer moves to the next target of the RFC 3263 list and
    the registration starts again there; a target that sent Retry-After is skipped until
    it has passed (RFC 3261 §21.5.4).
    """

    def __init__(
        self,
        reactor: Any,
        aor: SipURI,
        resolver: Resolver,
        build_protocol: Callable[[], Any],
        registration: Registration,
        keepalive: Any,
    ) -> None:
        self.reactor = reactor
        self.aor = aor
        self.resolver = resolver
        self.registration = registration
        self.keepalive = keepalive
        self._build = build_protocol
        if getattr(registration, "failover", False) is None:
            registration.failover = self.fail_over
        self.port: Any = None
        self.protocol: Any = None
        #: The targets tried (``endpoint.tried`` of the stream service).
        self.tried: list[str] = []
        self.endpoint = self
        self.client = self
        self._bound: Deferred[Any] | None = None
        self._stopping: Deferred[Any] | None = None
        #: The RFC 3263 targets, the one in use, and those skipped until a time (Retry-After).
        self._targets: list[tuple[str, int]] = []
        self._current = 0
        self._skip_until: dict[tuple[str, int], float] = {}

    @property
    def target_count(self) -> int:
        """How many RFC 3263 targets the registrar's domain gave."""
        return len(self._targets)

    def startService(self) -> None:
        """Locate the registrar, bind the socket; the registration starts on it."""
        super().startService()
        self._stopping = None
        self._bound = maybeDeferred(self.resolver, self.aor)
        self._bound.addCallback(self._first_address)
        self._bound.addCallback(self._bind)

    def _first_address(self, targets: Sequence[tuple[str, int]]) -> Deferred[tuple[str, int]]:
        if not targets:
            raise ValueError(f"resolver returned no address for {self.aor.aor}")
        self._targets = [(str(host), int(port)) for host, port in list(targets)[:16]]
        self._current = 0
        self.tried = []
        return self._address_of(self._targets[0])

    def _address_of(self, target: tuple[str, int]) -> Deferred[tuple[str, int]]:
        """The ``(ip, port)`` of *target*, its host name resolved (the locator's DNS server
        when it has one, else the reactor's resolver)."""
        host, port = target
        self.tried = [*self.tried[-15:], f"{host}:{port}"]  # bounded: moves may recur
        try:
            ipaddress.ip_address(host)
        except ValueError:
            # A locator asking a given DNS server resolves its SRV targets there too.
            if isinstance(self.resolver, ServerLocator) and self.resolver.hostname_resolver:
                resolving = self.resolver.dns_resolver.getHostByName(host)
            else:
                resolving = self.reactor.resolve(host)
            return resolving.addCallback(lambda ip: (ip, port))  # type: ignore[no-any-return]
        return succeed((host, port))

    def fail_over(self, protocol: Any, retry_after: float | None = None) -> bool:
        """Move to the next RFC 3263 target after a 503/408/no answer (§4.3); True when
        moving (the registration then registers there).

        *retry_after* keeps the current target out of the choice until it has passed.  A
        socket still carrying calls stays where it is (moving it would strand them).
        """
        if (
            protocol is not self.protocol
            or getattr(protocol, "dialog_count", 0)
            or len(self._targets) < 2
        ):
            return False
        now = self.reactor.seconds()
        self._skip_until = {t: end for t, end in self._skip_until.items() if end > now}
        current = self._targets[self._current]
        if retry_after:
            self._skip_until[current] = now + retry_after
        count = len(self._targets)
        for step in range(1, count):
            index = (self._current + step) % count
            if self._targets[index] not in self._skip_until:
                break
        else:
            return False
        self._current = index
        target = self._targets[index]
        log.info("UDP flow of {aor}: moving to {host}:{port} (RFC 3263 §4.3)",
                 aor=self.aor.aor, host=target[0], port=target[1])
        d = self._address_of(target)
        # Never re-register from inside the registration's own response handling.
        d.addCallback(lambda peer: self.reactor.callLater(0, self._move, protocol, peer))
        d.addErrback(lambda f: log.warn("cannot resolve {host}: {why}", host=target[0],
                                        why=f.getErrorMessage()))
        return True

    def _move(self, protocol: Any, peer: tuple[str, int]) -> None:
        """Point the socket at *peer* and register there (the old server's binding is left
        to expire: it failed us)."""
        if protocol is not self.protocol or not self.running:
            return
        protocol.peer = peer
        self.registration.connection_lost(protocol)
        self.registration.connection_made(protocol)

    def _bind(self, peer: tuple[str, int]) -> Any:
        from voiptwisted.sip.datagram import READ_SIZE, routable_address

        if not self.running:
            return None
        protocol = self._build()
        protocol.peer = peer
        protocol.registration = self.registration
        protocol.keepalive = self.keepalive
        protocol.service = self
        self.protocol = protocol
        self.port = self.reactor.listenUDP(
            0, protocol, interface=routable_address(peer[0]), maxPacketSize=READ_SIZE
        )
        return protocol

    def whenConnected(self, failAfterFailures: int | None = None) -> Deferred[Any]:
        """Fires with the protocol once the socket is bound (fails if the registrar cannot be
        located): the ``ClientService`` call the service makes, for one UDP socket."""
        if self._bound is None:
            return fail(RuntimeError("not started"))
        return _when_done_with(self._bound)

    def stopService(self) -> Deferred[None]:
        """Un-register (Expires: 0), then close the socket.  Idempotent."""
        if self._stopping is not None:
            return _when_done(self._stopping)
        super().stopService()
        d = self.registration.stop()
        if self.keepalive is not None:
            self.keepalive.stop()

        def close(_: object) -> None:
            port, self.port = self.port, None
            if port is not None:
                port.stopListening()

        d.addCallback(close)
        self._stopping = d
        return _when_done(d)

    def start(self) -> Deferred[Any]:
        """Start and fire with the registered protocol; fail (and stop) if the registrar
        cannot be located or refuses us.  Cancelling it stops the service, after the
        answer to a REGISTER in flight (as :meth:`SIPClientService.start`)."""
        done: list[bool] = []

        def cancel(_: Deferred[Any]) -> None:
            if not done:
                done.append(True)
                _stop_after_register(self, self.registration, self.reactor)

        ready: Deferred[Any] = Deferred(cancel)

        def succeed_once(protocol: Any) -> None:
            if not done:
                done.append(True)
                ready.callback(protocol)

        def fail_once(failure: Failure) -> None:
            if done:
                return
            done.append(True)
            self.stopService().addBoth(lambda _: ready.errback(failure))

        self.registration.when_registered().addCallbacks(succeed_once, fail_once)
        self.startService()
        assert self._bound is not None
        self._bound.addErrback(fail_once)
        return ready


def _stop_after_register(service: Service, registration: Registration, reactor: Any) -> None:
    """Stop *service* (a cancelled ``start``): at once, or, while a REGISTER is in flight,
    once it is answered or ``unregister_timeout`` has passed, so that ``stopService``
    removes a binding it made (RFC 3261 §10.2: no new REGISTER before that answer)."""
    if not registration.in_flight:
        service.stopService()
        return
    answered = registration.when_registered()
    answered.addTimeout(registration.unregister_timeout, reactor)
    answered.addBoth(lambda _: service.stopService())


def _when_done_with(d: Deferred[Any]) -> Deferred[Any]:
    """A new Deferred with ``d``'s result, leaving ``d``'s chain intact."""
    waiter: Deferred[Any] = Deferred()

    def relay(result: object) -> object:
        if isinstance(result, Failure):
            waiter.errback(result)
            return None
        waiter.callback(result)
        return result

    d.addBoth(relay)
    return waiter


def build_client(
    aor: SipURI,
    *,
    password: str | None = None,
    username: str | None = None,
    dialog_class: type | None = None,
    media_config: Any = None,
    ca_file: str | None = None,
    verify: bool = True,
    keepalive: float | None = 30.0,
    reactor: Any,
    instance_id: str | None = None,
    expires: int = 3600,
    resolver: Resolver | None = None,
    dns_server: tuple[str, int] | None = None,
    protocol_kwargs: dict[str, Any] | None = None,
    on_protocol: Callable[[Any], None] | None = None,
    auth_realms: Iterable[str] = (),
    realm_credentials: Mapping[str, tuple[str, str]] | None = None,
    allow_legacy_digest: bool = False,
    protocol_class: type[SessionInitiationProtocol] | None = None,
) -> SIPClientService | SIPDatagramClientService | TransportChoosingService:
    """Build (not start) the :class:`SIPClientService` that :func:`run` starts.

    Use it directly to embed the UA in a ``MultiService`` (``startService``/``stopService``)
    when a refused registration should keep retrying instead of failing a Deferred.
    ``reactor`` (required; :func:`run` defaults it to the global one) times everything and
    makes the connections (``IReactorTime``, ``IReactorTCP``/``IReactorSSL``, or
    ``IReactorUDP`` for a ``;transport=udp`` AOR).
    ``protocol_kwargs`` are extra ``SessionInitiationProtocol`` arguments (``max_calls``,
    ``trace`` ...); ``on_protocol`` is called with each protocol built (one per flow).
    The registrar is located with DNS SRV (RFC 3263) unless the AOR has a port or an IP
    address; ``dns_server`` (``(ip, port)``) asks that DNS server instead of the system's,
    ``resolver`` replaces the lookup altogether (see :func:`client_endpoint`).  A ``sip:``
    or ``sips:`` AOR naming no transport and no port, located by a ``ServerLocator``, gets
    its transport from DNS NAPTR at start (RFC 3263 §4.1): a
    :class:`TransportChoosingService` is returned then.

    Digest credentials go only to the registrar's realm (bound by its first challenge),
    to ``auth_realms`` (same username and password) and to the realms of
    ``realm_credentials`` (``{realm: (username, password)}``); qop-less MD5 only with
    ``allow_legacy_digest`` (see :class:`voiptwisted.sip.digest.Credentials`).

    A ``sips:`` AOR with a ``media_config`` that explicitly sets ``srtp`` to "off" or
    "optional" raises ValueError: its calls are SRTP only.

    ``protocol_class`` (a ``SessionInitiationProtocol`` subclass) builds the TLS/TCP flows;
    a ``;transport=udp`` AOR refuses one (its flows are ``SIPDatagramProtocol``).
    """
    from voiptwisted.sdp.policy import srtp_policy

    # A sips: AOR takes SRTP only (issue 14 finding 11): refuse a contrary explicit policy.
    srtp_policy(
        getattr(media_config, "srtp", None), aor,
        explicit=getattr(media_config, "srtp_explicit", False),
    )

    instance = normalize_instance_id(instance_id or str(uuid.uuid4()))
    if aor.transport == "UDP" and protocol_class is not None:
        raise ValueError("protocol_class builds TLS/TCP flows; a UDP AOR has none")
    credentials = None
    if password is not None or realm_credentials:
        # One object for the registration and every flow's dialogs: the registrar's
        # first challenge binds the realm calls may answer (issue 14, finding 4).
        credentials = Credentials(
            username if username is not None else (aor.user or ""),
            password,
            realms=auth_realms,
            table=realm_credentials,
            allow_legacy_digest=allow_legacy_digest,
        )
    registration = Registration(
        aor,
        reactor=reactor,
        expires=expires,
        instance_id=instance,
        credentials=credentials,
    )
    if resolver is None:
        resolver = ServerLocator(
            dns_server_resolver(dns_server, reactor) if dns_server is not None else None,
            reactor=reactor,
        )

    def make(transport: str) -> SIPClientService | SIPDatagramClientService:
        """The service for the flow over *transport* ("TLS", "TCP" or "UDP")."""
        assert resolver is not None
        udp = transport == "UDP"
        flow_keepalive: Any = None
        if keepalive:
            flow_keepalive = (
                DatagramKeepalive(reactor, interval=keepalive)
                if udp
                else FlowKeepalive(reactor=reactor, interval=keepalive)
            )

        def build() -> Any:
            kwargs: dict[str, Any] = {
                "aor": aor,
                "reactor": reactor,
                "instance_id": instance,
                "credentials": credentials,
            }
            if dialog_class is not None:
                kwargs["dialog_class"] = dialog_class
            if media_config is not None:
                kwargs["media_config"] = media_config
            if keepalive:
                kwargs["keepalive_interval"] = keepalive
            cls = SIPDatagramProtocol if udp else (protocol_class or SessionInitiationProtocol)
            protocol = cls(**kwargs, **(protocol_kwargs or {}))
            if on_protocol is not None:
                on_protocol(protocol)
            return protocol

        if udp:
            return SIPDatagramClientService(
                reactor, aor, resolver, build, registration, flow_keepalive
            )
        endpoint = client_endpoint(
            reactor, aor, ca_file=ca_file, verify=verify, resolver=resolver,
            dns_server=dns_server, transport=transport,
        )
        return SIPClientService(reactor, endpoint, build, registration, flow_keepalive)

    if isinstance(resolver, ServerLocator) and naptr_applies(aor):
        return TransportChoosingService(reactor, aor, resolver, make, registration)
    return make(aor.transport)


class TransportChoosingService(Service):
    """The running UA for an AOR whose transport DNS NAPTR chooses (RFC 3263 §4.1).

    Starting asks :meth:`ServerLocator.choose_transport
    <voiptwisted.sip.locate.ServerLocator.choose_transport>`, then builds and starts the
    :class:`SIPClientService` (TLS, TCP) or :class:`SIPDatagramClientService` (UDP) for
    the transport chosen -- :attr:`inner` -- with the one ``registration`` built up front
    (so waiting on it works before the choice is made).  It offers what the service reads
    of those: :meth:`start`, ``registration``, ``keepalive``, ``client.whenConnected``,
    ``endpoint.tried``, :meth:`fail_over`.
    """

    def __init__(
        self,
        reactor: Any,
        aor: SipURI,
        locator: ServerLocator,
        make: Callable[[str], Any],
        registration: Registration,
    ) -> None:
        self.reactor = reactor
        self.aor = aor
        self.locator = locator
        self.registration = registration
        self._make = make
        #: The service for the chosen transport, once chosen.
        self.inner: Any = None
        #: The targets tried (before the choice: none).
        self.tried: list[str] = []
        self.target_count = 0
        self._choosing: Deferred[Any] | None = None

    @property
    def endpoint(self) -> Any:
        """The inner service's endpoint (``tried``, ``target_count``), else this."""
        return self.inner.endpoint if self.inner is not None else self

    @property
    def client(self) -> Any:
        """The inner service's ``ClientService`` (``whenConnected``), else this."""
        return self.inner.client if self.inner is not None else self

    @property
    def keepalive(self) -> Any:
        """The inner service's keep-alive (None before the choice)."""
        return self.inner.keepalive if self.inner is not None else None

    def _choose(self) -> Deferred[Any]:
        """Fires with :attr:`inner`, building it after the NAPTR lookup (once)."""
        if self._choosing is None:
            self._choosing = self.locator.choose_transport(self.aor)
            self._choosing.addCallback(self._chosen)
        return _when_done_with(self._choosing)

    def _chosen(self, transport: str) -> Any:
        self.inner = self._make(transport)
        return self.inner

    def whenConnected(self, failAfterFailures: int | None = None) -> Deferred[Any]:
        """The inner ``ClientService``'s ``whenConnected``, once the transport is chosen."""
        return self._choose().addCallback(
            lambda inner: inner.client.whenConnected(failAfterFailures=failAfterFailures)
        )

    def fail_over(self, protocol: Any, retry_after: float | None = None) -> bool:
        """The inner service's RFC 3263 §4.3 failover (False when it has none)."""
        inner_fail_over = getattr(self.inner, "fail_over", None)
        return bool(inner_fail_over is not None and inner_fail_over(protocol, retry_after))

    def startService(self) -> None:
        """Choose the transport, then start the inner service (unless stopped meanwhile)."""
        super().startService()

        def start(inner: Any) -> None:
            if self.running and not inner.running:
                inner.startService()

        self._choose().addCallback(start).addErrback(
            lambda f: log.error("cannot start {aor}: {why}", aor=self.aor.aor,
                                why=f.getErrorMessage())
        )

    def stopService(self) -> Deferred[None]:
        """Stop the inner service (un-register, close the flow)."""
        super().stopService()
        if self.inner is None:
            return succeed(None)
        return self.inner.stopService()  # type: ignore[no-any-return]

    def start(self) -> Deferred[Any]:
        """Choose the transport, start the inner service and fire with the registered
        protocol (see :meth:`SIPClientService.start`).

        Cancelling it stops the UA wherever it is: before the NAPTR answer no flow is
        built or started afterwards; after it, the inner service's start is cancelled
        (no further connect attempt nor REGISTER, the flow closed)."""
        super().startService()

        def start(inner: Any) -> Deferred[Any]:
            if not self.running:
                return fail(RuntimeError(f"{self.aor.aor}: stopped before it started"))
            return inner.start()  # type: ignore[no-any-return]

        def cancelled(failure: Failure) -> Failure:
            if failure.check(CancelledError) and self.running:
                Service.stopService(self)
            return failure

        return self._choose().addCallback(start).addErrback(cancelled)


#: Who we are on a flow :func:`connect` opens without an ``aor``: the From of its calls.
DIRECT_AOR = "sip:voip@127.0.0.1"


def connect(
    endpoint_or_uri: IStreamClientEndpoint | SipURI | str,
    *,
    aor: SipURI | str | None = None,
    reactor: Any = None,
    ca_file: str | None = None,
    verify: bool = True,
    resolver: Resolver | None = None,
    dns_server: tuple[str, int] | None = None,
    timeout: float = 30.0,
    **protocol_kwargs: Any,
) -> Deferred[SessionInitiationProtocol]:
    """Open one SIP flow, without registering; fires with its
    :class:`~voiptwisted.sip.protocol.SessionInitiationProtocol`.

    *endpoint_or_uri* is where to connect: any ``IStreamClientEndpoint``, or the
    ``sip:``/``sips:`` URI of the party to call (``"sips:bob@example.com"``).  A URI is
    located as a registrar's would be (:func:`client_endpoint`: RFC 3263 DNS SRV on its
    host unless it has a port or an IP address, targets tried in order; TLS unless it
    says ``;transport=tcp``; UDP is refused) and the server's certificate is verified
    against the URI's host (RFC 5922 §7.2), with ``ca_file`` added to the platform's
    trust store; ``verify=False`` turns verification off (logged on every connect).
    Over TLS the Deferred fires once the handshake has verified the server, or fails
    with :class:`TLSVerificationFailed`; over an endpoint you built it fires once
    connected.  ``aor`` is who we are on the flow (the From of its calls; default
    :data:`DIRECT_AOR`); *protocol_kwargs* go to the protocol (``dialog_class``,
    ``media_config``, ``credentials``, ``trace`` ...).

    Place a call on it with ``Dialog(sip=protocol).dial(uri, session_class=...)``; close
    it with ``protocol.close()``.  Cancelling the Deferred gives up the DNS lookup, the
    connection attempt or the TLS handshake underway (the flow is dropped) and fails it
    with ``CancelledError``.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    identity = SipURI.parse(aor or DIRECT_AOR) if not isinstance(aor, SipURI) else aor
    factory = SIPClientFactory(aor=identity, reactor=reactor, **protocol_kwargs)
    factory.noisy = False
    if isinstance(endpoint_or_uri, str | SipURI):
        uri = endpoint_or_uri
        if isinstance(uri, str):
            uri = SipURI.parse(uri)
        endpoint = client_endpoint(
            reactor, uri, ca_file=ca_file, verify=verify, resolver=resolver,
            dns_server=dns_server, timeout=timeout,
        )  # fmt: skip
        return endpoint.connect_verified(factory)
    if not IStreamClientEndpoint.providedBy(endpoint_or_uri):
        raise TypeError(
            f"connect() takes an IStreamClientEndpoint or a sip:/sips: URI, "
            f"not {type(endpoint_or_uri).__name__}"
        )
    return endpoint_or_uri.connect(factory)  # type: ignore[no-any-return]


def run(
    aor: SipURI,
    *,
    password: str | None = None,
    username: str | None = None,
    dialog_class: type | None = None,
    media_config: Any = None,
    ca_file: str | None = None,
    verify: bool = True,
    keepalive: float | None = 30.0,
    reactor: Any = None,
    instance_id: str | None = None,
    expires: int = 3600,
    resolver: Resolver | None = None,
    dns_server: tuple[str, int] | None = None,
    protocol_kwargs: dict[str, Any] | None = None,
    auth_realms: Iterable[str] = (),
    realm_credentials: Mapping[str, tuple[str, str]] | None = None,
    allow_legacy_digest: bool = False,
    protocol_class: type[SessionInitiationProtocol] | None = None,
) -> Deferred[Any]:
    """Connect to ``aor``'s registrar, register, and fire with the registered protocol.

    The Twisted form of the reference's ``SessionInitiationProtocol.run``.  The protocol's
    ``service`` attribute is the :class:`SIPClientService`: ``protocol.service.stopService()``
    un-registers and disconnects.  The Deferred fails with ``RegistrationFailed`` (refused),
    :class:`TLSVerificationFailed` (certificate refused) or the connection error of the first
    attempt; the service is then stopped.  ``instance_id`` defaults to a fresh UUID: pass
    :func:`load_instance_id` to keep it across restarts (RFC 5626 §4.1).  ``keepalive`` is
    the RFC 5626 CRLF ping interval (None or 0 disables it).  ``protocol_kwargs`` are extra
    ``SessionInitiationProtocol`` arguments for every flow (``max_calls``, ``trace``,
    ``outbound_proxy`` ...), as for :func:`build_client`.  The registrar is found via DNS
    SRV (RFC 3263) unless the AOR has a port or an IP address; ``dns_server`` (``(ip, port)``)
    is the DNS server to ask instead of the system's.  ``auth_realms``,
    ``realm_credentials`` and ``allow_legacy_digest`` say which Digest challenges are
    answered besides the registrar's, and ``protocol_class``, as for :func:`build_client`.
    ``reactor`` defaults to the global one: this convenience function is where the library
    may reach for it.
    """
    if reactor is None:
        from twisted.internet import reactor as global_reactor

        reactor = global_reactor
    return build_client(
        aor,
        password=password,
        username=username,
        dialog_class=dialog_class,
        media_config=media_config,
        ca_file=ca_file,
        verify=verify,
        keepalive=keepalive,
        reactor=reactor,
        instance_id=instance_id,
        expires=expires,
        resolver=resolver,
        dns_server=dns_server,
        protocol_kwargs=protocol_kwargs,
        auth_realms=auth_realms,
        realm_credentials=realm_credentials,
        allow_legacy_digest=allow_legacy_digest,
        protocol_class=protocol_class,
    ).start()
