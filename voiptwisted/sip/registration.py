"""Registration of one UA flow with its registrar (RFC 3261 §10.2, RFC 5626 §4.2).

:class:`Registration` is a small state machine in the shape of Twisted's ``ClientService``: time
comes from an injected clock, transient failures are retried after delays from an injected retry
policy, and I/O happens only through the protocol it is attached to.  The protocol drives it with
its ``registration`` hook::

    connection_made(protocol)          -> REGISTER (digest on 401/407, 423 -> Min-Expires)
    200 OK                             -> registered; refresh at about half the granted time
    connection_lost(protocol, reason)  -> timers stopped; the service reconnects and the next
                                          connection_made registers again
    stop()                             -> REGISTER with Expires: 0 for our binding

States: ``idle -> registering -> registered -> refreshing -> registered ...``; a refusal
(wrong credentials, 403, any other final error) moves to ``failed`` and retries no faster than
``refused_retry_interval`` (60 s by default), answering the challenge that refused us
directly (wrong credentials cost one REGISTER per interval, not two); a transient error
(transaction timeout, 5xx) moves to ``backing-off`` and retries after
``retry_policy(attempt)`` seconds.
"""

from __future__ import annotations

import enum
import re
import secrets
import uuid
from collections.abc import Callable
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from voiptwisted.sip.digest import Challenge, Credentials, DigestError
from voiptwisted.sip.headers import NameAddr, SIPParseError
from voiptwisted.sip.message import Request, Response
from voiptwisted.sip.status import SIPStatus
from voiptwisted.sip.transaction import TransactionTimeout
from voiptwisted.sip.uri import SipURI

__all__ = [
    "Registration",
    "RegistrationFailed",
    "RegistrationState",
    "normalize_instance_id",
    "refresh_delay",
]

#: Never retry a refused registration faster than this (seconds): no tight loops.
REFUSED_RETRY_INTERVAL = 60.0
#: Requests in one exchange (challenges, stale nonces, 423) before giving up.
MAX_ROUNDS = 6
#: Longest expiry we accept from Min-Expires (one week), so a bad registrar cannot pin us.
MAX_EXPIRES = 7 * 24 * 3600
_INSTANCE_RE = re.compile(
    r"^(?:urn:uuid:)?([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$", re.I
)


class RegistrationState(enum.Enum):
    """Where the registration of the current flow stands."""

    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    REFRESHING = "refreshing"
    BACKING_OFF = "backing-off"
    FAILED = "failed"
    UNREGISTERING = "unregistering"
    STOPPED = "stopped"


class RegistrationFailed(Exception):
    """The registrar refused us; ``str()`` is the one log line (never contains the password)."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


def normalize_instance_id(instance_id: str) -> str:
    """Return ``urn:uuid:<uuid>`` for a bare UUID or a ``urn:uuid:`` URN (RFC 5626 §4.1)."""
    match = _INSTANCE_RE.match(instance_id.strip())
    if match is None:
        raise ValueError("instance_id must be a UUID or a urn:uuid: URN (RFC 5626 §4.1)")
    return f"urn:uuid:{match.group(1).lower()}"


def refresh_delay(granted: float) -> float:
    """Seconds until the refresh of a binding granted for ``granted`` seconds.

    Half the granted time, and at least 5 s before expiry when that is earlier, never less
    than one second: the refresh reaches the registrar well before the binding lapses
    (RFC 3261 §10.2.4).
    """
    return max(1.0, min(granted / 2.0, granted - 5.0))


class Registration:
    """Keep ``aor`` registered over whatever flow the protocol currently has.

    ``password`` (never logged) answers digest challenges on 401/407 (RFC 7616, RFC 8760);
    ``username`` defaults to the AOR's user.  ``credentials`` replaces both with a
    shared `Credentials` (the protocols' too): the registrar's first challenge binds
    its realm there, so calls answer that realm and no other unconfigured one.
    ``instance_id`` is the stable ``+sip.instance`` UUID and ``reg_id`` the flow number
    (RFC 5626 §4.2).
    """

    log = Logger()

    def __init__(
        self,
        aor: SipURI,
        *,
        password: str | None = None,
        username: str | None = None,
        reactor: IReactorTime,
        expires: int = 3600,
        instance_id: str,
        reg_id: int = 1,
        user_agent: str | None = None,
        retry_policy: Callable[[int], float] | None = None,
        refused_retry_interval: float = REFUSED_RETRY_INTERVAL,
        unregister_timeout: float = 5.0,
        credentials: Credentials | None = None,
    ) -> None:
        if not 0 < expires <= MAX_EXPIRES:
            raise ValueError(f"expires must be in 1..{MAX_EXPIRES}")
        self.aor = aor
        self.clock: IReactorTime = reactor
        self.expires = int(expires)
        self.requested_expires = int(expires)
        self.instance_id = normalize_instance_id(instance_id)
        self.reg_id = int(reg_id)
        self.user_agent = user_agent
        self.retry_policy = retry_policy or backoffPolicy(
            initialDelay=1.0, factor=2.0, maxDelay=60.0
        )
        self.refused_retry_interval = max(REFUSED_RETRY_INTERVAL, refused_retry_interval)
        self.unregister_timeout = unregister_timeout
        self._username = username if username is not None else (aor.user or "")
        if credentials is None and password is not None:
            credentials = Credentials(self._username, password)
        self.credentials: Credentials | None = credentials
        self.call_id = f"{uuid.uuid4().hex}@voiptwisted"
        self.cseq = 0
        self.state = RegistrationState.IDLE
        self.protocol: Any = None
        self.granted_expires: int | None = None
        self.flow_timer: int | None = None
        self.registered_contact: str | None = None
        self.last_failure: RegistrationFailed | None = None
        self.register_count = 0
        self.success_count = 0
        self._transient_failures = 0
        self._timer: IDelayedCall | None = None
        self._pending: Deferred[Response] | None = None
        self._waiters: list[Deferred[Any]] = []
        self._stopped = False
        self._moved_flow: Any = None
        #: The challenges of the last exchange refused for wrong credentials, answered directly
        #: by the next retry (issue 17: one REGISTER per retry interval instead of two).
        self._refusing_challenges: dict[tuple[str, str], Challenge] = {}
        #: Set by the service: ``failover(protocol, retry_after) -> bool`` moves to the next
        #: RFC 3263 server (closing *protocol*) when there is one (RFC 3263 §4.3, issue 10).
        self.failover: Callable[[Any, float | None], bool] | None = None

    def __repr__(self) -> str:
        return f"<Registration {self.aor.aor} {self.state.value}>"

    # --- public API -------------------------------------------------------------------------

    @property
    def registered(self) -> bool:
        """True while the registrar holds a binding for the current flow."""
        return self.state in (RegistrationState.REGISTERED, RegistrationState.REFRESHING)

    def when_registered(self) -> Deferred[Any]:
        """A Deferred firing with the protocol on the next success (at once if registered).

        It fails with :class:`RegistrationFailed` when the registrar refuses us (the
        registration itself keeps retrying, no faster than once a minute) or when stopped.
        """
        if self.registered:
            return succeed(self.protocol)
        d: Deferred[Any] = Deferred(self._forget_waiter)
        self._waiters.append(d)
        return d

    def _forget_waiter(self, d: Deferred[Any]) -> None:
        if d in self._waiters:
            self._waiters.remove(d)

    def connection_made(self, protocol: Any) -> None:
        """A new flow is up: register on it (RFC 5626 §4.2.1: each flow registers)."""
        self._cancel_pending()
        self.protocol = protocol
        if self._stopped:
            return
        self._transient_failures = 0
        self._register(RegistrationState.REGISTERING)

    def connection_lost(self, protocol: Any = None, reason: object = None) -> None:
        """The flow is gone: stop every timer; the next ``connection_made`` registers again."""
        if protocol is not None and protocol is not self.protocol:
            return
        self.protocol = None
        self._cancel_pending()
        if not self._stopped:
            self.state = RegistrationState.IDLE

    def stop(self) -> Deferred[None]:
        """Remove our binding (REGISTER with ``Expires: 0``, RFC 3261 §10.2.2) and stop.

        Fires when the registrar answered, or after ``unregister_timeout`` seconds; never fails.
        """
        self._stopped = True
        was_registered = self.registered or self.state is RegistrationState.REGISTERING
        self._cancel_pending()
        self._fail_waiters(RegistrationFailed("registration stopped"))
        protocol, contact = self.protocol, self.registered_contact
        if protocol is None or contact is None or not was_registered:
            self.state = RegistrationState.STOPPED
            return succeed(None)
        self.state = RegistrationState.UNREGISTERING
        d = Deferred.fromCoroutine(self._exchange(protocol, 0, contact))
        d.addTimeout(self.unregister_timeout, self.clock)

        def done(result: object) -> None:
            self.state = RegistrationState.STOPPED
            self.registered_contact = None
            if isinstance(result, Failure):
                self.log.warn(
                    "un-registration of {aor} not confirmed: {error}",
                    aor=self.aor.aor,
                    error=_describe(result),
                )
            elif isinstance(result, Response) and not 200 <= result.status_code < 300:
                self.log.warn(
                    "un-registration of {aor} refused: {code} {phrase}",
                    aor=self.aor.aor,
                    code=result.status_code,
                    phrase=_phrase(result),
                )

        return d.addBoth(done)

    # --- building requests -------------------------------------------------------------------

    @property
    def request_uri(self) -> str:
        """The registrar's URI: the AOR's domain without user part (RFC 3261 §10.2)."""
        host = str(self.aor.host)
        if ":" in host:
            host = f"[{host}]"
        default = 5061 if self.aor.scheme == "sips" else 5060
        port = "" if self.aor.port == default else f":{self.aor.port}"
        return f"{self.aor.scheme}:{host}{port}"

    def contact_for(self, protocol: Any) -> str:
        """The protocol's Contact plus ``+sip.instance`` and ``reg-id`` (RFC 5626 §4.2.1)."""
        contact = str(protocol.contact)
        if "+sip.instance" not in contact:
            contact += f';+sip.instance="<{self.instance_id}>"'
        if "reg-id" not in contact:
            contact += f";reg-id={self.reg_id}"
        return contact

    def build_request(
        self,
        protocol: Any,
        expires: int,
        contact: str,
        authorizations: dict[tuple[str, str], Challenge],
        retire: str | None = None,
    ) -> Request:
        """One REGISTER: same Call-ID for every request of this UA, CSeq incremented
        (RFC 3261 §10.2.4), fresh From tag, ``Supported: outbound, path`` (RFC 5626 §4.2.1).

        ``retire`` is a previously registered Contact to remove in the same request with
        ``;expires=0`` (RFC 3261 §10.2.1: per-contact expiry)."""
        self.cseq += 1
        headers: list[tuple[str, str]] = [
            ("To", f"<{self.aor.aor}>"),
            ("From", f"<{self.aor.aor}>;tag={secrets.token_hex(8)}"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} REGISTER"),
            ("Contact", contact if retire is None else f"{contact}, {retire};expires=0"),
            ("Expires", str(expires)),
            ("Supported", "outbound, path"),
        ]
        if self.user_agent:
            headers.append(("User-Agent", self.user_agent))
        assert self.credentials is not None or not authorizations
        for (header, _realm), challenge in authorizations.items():
            value = self.credentials.authorization(challenge, "REGISTER", self.request_uri)
            headers.append((header, value))
        return Request("REGISTER", self.request_uri, headers)

    # --- the exchange ------------------------------------------------------------------------

    async def _exchange(
        self,
        protocol: Any,
        expires: int,
        contact: str,
        retire: str | None = None,
        challenges: dict[tuple[str, str], Challenge] | None = None,
    ) -> Response:
        """Send REGISTER until a final answer that is not a challenge or a 423.

        Digest challenges are answered (RFC 3261 §22.2, RFC 7616 §3.4); the same challenge
        again for the same credentials is a refusal unless it is ``stale=true`` with a new
        nonce (RFC 7616 §3.3: the nonce, not the password, was refused), which allows one
        more try.  *challenges* (a retry after such a refusal) are answered in the first
        request.  423 retries once
        with ``Min-Expires`` (RFC 3261 §10.2.8).  At most ``MAX_ROUNDS`` requests.
        """
        authorizations: dict[tuple[str, str], Challenge] = dict(challenges or {})
        answered: set[tuple[str, str]] = set(authorizations)
        renewed: set[tuple[str, str]] = set()
        for _ in range(MAX_ROUNDS):
            request = self.build_request(protocol, expires, contact, authorizations, retire)
            self.register_count += 1
            response = await protocol.send_request(request)
            code = response.status_code
            if code in (401, 407):
                key, challenge = self._pick_challenge(protocol, response)
                previous = authorizations.get(key)
                if key in answered and (
                    not challenge.stale
                    or key in renewed
                    or previous is None
                    or challenge.nonce == previous.nonce
                ):
                    self._refusing_challenges = {**authorizations, key: challenge}
                    raise RegistrationFailed(
                        f"registration refused by {_peer(protocol, self.aor)}: wrong credentials "
                        f"({code} {_phrase(response)} again after authenticating)",
                        code,
                    )
                if key in answered:
                    renewed.add(key)
                answered.add(key)
                authorizations[key] = challenge
                continue
            if code == 423 and expires > 0:
                expires = self._min_expires(protocol, response, expires)
                continue
            return response
        raise RegistrationFailed(
            f"registration refused by {_peer(protocol, self.aor)}: no final answer after "
            f"{MAX_ROUNDS} requests (challenge loop)"
        )

    def _pick_challenge(
        self, protocol: Any, response: Response
    ) -> tuple[tuple[str, str], Challenge]:
        code = response.status_code
        peer = _peer(protocol, self.aor)
        credentials = self.credentials
        if credentials is None or (not credentials.password_configured and not credentials.realms):
            raise RegistrationFailed(
                f"registration refused by {peer}: {code} {_phrase(response)} "
                "but no password is configured",
                code,
            )
        try:
            header, challenge = credentials.choose(response, registrar=True)
        except DigestError as exc:
            raise RegistrationFailed(
                f"registration refused by {peer}: {code} {_phrase(response)}: {exc}", code
            ) from None
        return (header, challenge.realm), challenge

    def _min_expires(self, protocol: Any, response: Response, expires: int) -> int:
        value = response.headers.get("Min-Expires")
        try:
            min_expires = int(str(value).strip())
        except ValueError:
            min_expires = 0
        if not expires < min_expires <= MAX_EXPIRES:
            raise RegistrationFailed(
                f"registration refused by {_peer(protocol, self.aor)}: 423 Interval Too Brief "
                f"with unusable Min-Expires {value!r}",
                423,
            )
        self.log.info(
            "registrar wants at least {min} s (423); registering for {min} s", min=min_expires
        )
        self.expires = min_expires
        return min_expires

    # --- state machine -----------------------------------------------------------------------

    def _register(
        self,
        state: RegistrationState,
        retire: str | None = None,
        challenges: dict[tuple[str, str], Challenge] | None = None,
    ) -> None:
        protocol = self.protocol
        if protocol is None or self._stopped:
            return
        self._cancel_timer()
        self.state = state
        contact = self.contact_for(protocol)
        d = Deferred.fromCoroutine(
            self._exchange(protocol, self.expires, contact, retire, challenges)
        )
        self._pending = d
        d.addCallbacks(
            self._answered,
            self._errored,
            callbackArgs=(protocol, contact),
            errbackArgs=(protocol,),
        )

    def _answered(self, response: Response, protocol: Any, contact: str) -> None:
        if protocol is not self.protocol:
            return
        self._pending = None
        code = response.status_code
        if 200 <= code < 300:
            self._success(protocol, response, contact)
        elif code in (408, 503) and self._fail_over(protocol, response):
            return
        elif 500 <= code < 600 and code != 501:
            self._transient(protocol, f"{code} {_phrase(response)}", _retry_after(response))
        else:
            self._refused(
                protocol,
                RegistrationFailed(
                    f"registration refused by {_peer(protocol, self.aor)}: "
                    f"{code} {_phrase(response)}",
                    code,
                ),
                _retry_after(response),
            )

    def _errored(self, failure: Failure, protocol: Any) -> None:
        if protocol is not self.protocol or failure.check(CancelledError):
            return
        self._pending = None
        if getattr(protocol, "transport", None) is None:
            self._flow_died(protocol, failure)
            if self.failover is not None and not failure.check(*_TLS_FAILURES):
                # RFC 3263 §4.3: a transport failure moves the next flow to the next server.
                self.failover(protocol, None)
            return
        if failure.check(TransactionTimeout) and self._fail_over(protocol, None):
            return
        if failure.check(RegistrationFailed):
            self._refused(protocol, failure.value, None)
        else:
            self._transient(protocol, _describe(failure), None)

    def _flow_died(self, protocol: Any, failure: Failure) -> None:
        """The flow closed under our REGISTER: ``connection_lost`` follows and the next flow
        registers, so no retry timer here.  A TLS handshake or certificate failure was already
        reported in one line by the endpoint (``connect.SIPClientEndpoint.report``); saying it
        again here was the duplicate "registration ... failed: Error: [('SSL routines' ..."
        line of issue 3/6.  Any other loss is one info line (why the flow went away)."""
        if failure.check(*_TLS_FAILURES):
            return
        self.log.info(
            "flow to {peer} closed before the registrar answered: {what}",
            peer=_peer(protocol, self.aor),
            what=_describe(failure),
        )

    def _success(self, protocol: Any, response: Response, contact: str) -> None:
        granted = self._granted_expires(response, contact)
        self._learn_public_address(protocol, response)
        self.registered_contact = contact
        self.last_failure = None
        self._transient_failures = 0
        self._refusing_challenges = {}
        if granted <= 0:
            self._refused(
                protocol,
                RegistrationFailed(
                    f"registration refused by {_peer(protocol, self.aor)}: "
                    "200 OK without our binding (expires 0)"
                ),
                None,
            )
            return
        first = not self.registered
        self.success_count += 1
        self.granted_expires = granted
        self.state = RegistrationState.REGISTERED
        self._apply_flow_timer(protocol, response)
        self._tell_keepalive_outbound(protocol, response)
        delay = refresh_delay(granted)
        self._timer = self.clock.callLater(delay, self._refresh)
        if first:
            self.log.info(
                "registered {aor} at {peer} for {granted} s",
                aor=self.aor.aor,
                peer=_peer(protocol, self.aor),
                granted=granted,
            )
            self._tell_registered(protocol)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(protocol)
        self._follow_public_address(protocol, contact)

    def _tell_registered(self, protocol: Any) -> None:
        """Call the flow's ``on_registered()`` hook (the reference's), if it has one; an
        exception there is the application's: logged, the registration carries on."""
        hook = getattr(protocol, "on_registered", None)
        if hook is None:
            return
        try:
            hook()
        except Exception:
            self.log.failure("on_registered() of {protocol!r} failed", protocol=protocol)

    def _follow_public_address(self, protocol: Any, contact: str) -> None:
        """Re-register at once when the learned public address changed our Contact.

        The new Contact replaces the old one in one REGISTER (old one with ``expires=0``),
        so requests reach us through the address the registrar sees (RFC 3581, RFC 5626 §5).
        Once per flow, so a registrar that keeps rewriting Via cannot make us loop.
        """
        current = self.contact_for(protocol)
        if current == contact or self._moved_flow is protocol:
            return
        self._moved_flow = protocol
        self.log.info("Contact moved to {contact}; re-registering", contact=current)
        self._register(RegistrationState.REFRESHING, retire=contact)

    def _fail_over(self, protocol: Any, response: Response | None) -> bool:
        """503, 408 or a timeout from this server (RFC 3263 §4.3): let the service move to
        the next server, skipping this one for its Retry-After; True if it did."""
        if self.failover is None:
            return False
        retry_after = _retry_after(response) if response is not None else None
        what = f"{response.status_code} {_phrase(response)}" if response else "no answer"
        if not self.failover(protocol, retry_after):
            return False
        self.state = RegistrationState.BACKING_OFF
        self.log.warn(
            "registration with {peer} failed: {what}; trying the next server",
            peer=_peer(protocol, self.aor),
            what=what,
        )
        return True

    def _refresh(self) -> None:
        self._timer = None
        self._register(RegistrationState.REFRESHING)

    def _retry(self) -> None:
        """Register again after a refusal or a transient error.  After wrong credentials the
        challenge that refused us is answered at once: a registrar that still refuses costs
        one REGISTER per interval, not an unauthenticated one plus a digest one."""
        self._timer = None
        self.expires = max(self.expires, self.requested_expires)
        self._register(RegistrationState.REGISTERING, challenges=self._refusing_challenges)

    def _refused(
        self, protocol: Any, error: RegistrationFailed, retry_after: float | None
    ) -> None:
        self.state = RegistrationState.FAILED
        self.last_failure = error
        delay = max(self.refused_retry_interval, retry_after or 0.0)
        self.log.error("{error}; retrying in {delay:g} s", error=str(error), delay=delay)
        self._fail_waiters(error)
        self._timer = self.clock.callLater(delay, self._retry)

    def _transient(self, protocol: Any, what: str, retry_after: float | None) -> None:
        self.state = RegistrationState.BACKING_OFF
        delay = self.retry_policy(self._transient_failures)
        self._transient_failures += 1
        delay = max(delay, retry_after or 0.0)
        self.log.warn(
            "registration with {peer} failed: {what}; retrying in {delay:.1f} s",
            peer=_peer(protocol, self.aor),
            what=what,
            delay=delay,
        )
        self._timer = self.clock.callLater(delay, self._retry)

    def _granted_expires(self, response: Response, contact: str) -> int:
        """Our Contact's ``expires`` among the returned ones, else ``Expires``, else what we
        asked (RFC 3261 §10.2.4).  Our Contact is the one with our ``+sip.instance`` and
        ``reg-id`` (RFC 5626 §4.2.1) or, for a registrar that drops those, the one whose URI
        equals the one we sent (RFC 3261 §10.2.4, compared as §19.1.4)."""
        try:
            contacts = response.contact
            ours = NameAddr.parse(contact).uri
        except SIPParseError:
            contacts, ours = [], contact
        for name_addr in contacts:
            params = {k.lower(): v for k, v in name_addr.params.items()}
            instance = (params.get("+sip.instance") or "").strip('"').strip("<>").lower()
            if (
                instance == self.instance_id
                and str(params.get("reg-id", self.reg_id)) == str(self.reg_id)
            ) or (not instance and _same_contact_uri(name_addr.uri, ours)):
                value = _int_or_none(params.get("expires"))
                if value is not None:
                    return value
        if len(contacts) == 1:
            value = _int_or_none(contacts[0].params.get("expires"))
            if value is not None:
                return value
        value = _int_or_none(response.headers.get("Expires"))
        if value is not None:
            return value
        return self.expires

    def _learn_public_address(self, protocol: Any, response: Response) -> None:
        """Our address as the registrar sees it: top Via ``received``/``rport`` (RFC 3581)."""
        try:
            via = response.top_via
        except SIPParseError:
            return
        current = getattr(protocol, "public_address", None)
        learned = via.public_address(current)
        if learned is None or learned == current:
            return
        try:
            protocol.public_address = learned
        except AttributeError:
            return
        self.log.info("public address learned from Via: {address}", address=str(learned))

    def _apply_flow_timer(self, protocol: Any, response: Response) -> None:
        """RFC 5626 §4.4.1: keep-alive at the registrar's ``Flow-Timer`` interval."""
        value = _int_or_none(response.headers.get("Flow-Timer"))
        if value is None or value <= 0:
            return
        self.flow_timer = value
        keepalive = getattr(protocol, "keepalive", None)
        if keepalive is not None:
            keepalive.set_interval(value)

    def _tell_keepalive_outbound(self, protocol: Any, response: Response) -> None:
        """RFC 5626 §4.2.1: only a 2xx with ``Require: outbound`` promises CRLF pongs; the
        keepalive fails the flow on a missing pong only then (or once the flow answered)."""
        tags = {tag.strip().lower() for tag in response.headers.getlist("Require")}
        hook = getattr(getattr(protocol, "keepalive", None), "registrar_outbound", None)
        if hook is not None:
            hook("outbound" in tags)

    def _fail_waiters(self, error: RegistrationFailed) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(error)

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _cancel_pending(self) -> None:
        self._cancel_timer()
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()

    @property
    def pending_timer_count(self) -> int:
        """Timers this registration holds (0 or 1), for leak checks in tests."""
        return int(self._timer is not None and self._timer.active())


def _same_contact_uri(a: str, b: str) -> bool:
    """RFC 3261 §19.1.4 in the parts a registrar may rewrite: scheme, host and parameter
    names compare case-insensitively, the user part exactly, a missing port as the default."""
    try:
        ua, ub = SipURI.parse(a), SipURI.parse(b)
    except ValueError:
        return a == b

    def key(uri: SipURI) -> tuple[object, ...]:
        params = {k.lower(): (v or "").lower() for k, v in uri.parameters.items()}
        return (uri.scheme, uri.user, str(uri.host).lower(), uri.port, params.get("transport"))

    return key(ua) == key(ub)


def _int_or_none(value: object) -> int | None:
    if value is None:
        return None
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        return None
    return int(text)


def _retry_after(response: Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    return _int_or_none(str(value).split(";", 1)[0].split("(", 1)[0])


def _phrase(response: Response) -> str:
    phrase = getattr(response, "phrase", None) or getattr(response, "reason", None)
    return phrase or SIPStatus.phrase_for(response.status_code)


#: Flow failures the TLS endpoint reports itself (by qualified name: no OpenSSL import here).
_TLS_FAILURES = ("OpenSSL.SSL.Error", "service_identity.exceptions.VerificationError")


def _describe(failure: Failure) -> str:
    value = failure.value
    text = str(value)
    return f"{type(value).__name__}: {text}" if text else type(value).__name__


def _peer(protocol: Any, aor: SipURI) -> str:
    """``host:port`` of the registrar we talk to, for log lines."""
    try:
        peer = protocol.transport.getPeer()
        host, port = peer.host, peer.port
    except Exception:
        return str(aor.maddr)
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
