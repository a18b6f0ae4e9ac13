"""``VoIPService``: registration, keepalive, dialog routing and media wired into one service.

It is what ``twistd voip`` runs and what an existing Twisted application adds to its
own service tree (``VoIPService(ServiceConfig(...)).setServiceParent(application)``).

Without an AOR and without ``listen`` it is the *embedded default*: TLS on
127.0.0.1:5061 with a self-signed certificate created once in ``state_dir``,
answering every call with echo, so a newcomer can try it without a carrier.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import pathlib
import sys
import weakref
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.logger import Logger

from voiptwisted.sip.protocol import SIPClientFactory
from voiptwisted.sip.uri import SipURI

__all__ = [
    "EMBEDDED_PORT",
    "STOP_TIMEOUT",
    "ServiceConfig",
    "VoIPService",
    "baresip_command",
    "embedded_listen_description",
    "listen_description",
]

log = Logger()

#: How long stopService waits for BYEs, the un-REGISTER and closing flows (issue 6: within 5 s).
STOP_TIMEOUT = 4.0
#: The embedded default's TLS port on 127.0.0.1 (the SIP-over-TLS port, RFC 3261 §19.1.2).
EMBEDDED_PORT = 5061


@dataclasses.dataclass
class ServiceConfig:
    """Everything ``twistd voip`` can be told; the defaults are the embedded echo service.

    ``exit_process`` makes the end of a ``dial`` call decide the process exit status
    (set by ``twistd voip``; leave it False when embedding).  ``dns_server`` (an IP address
    and port) is where the registrar's DNS SRV and A/AAAA records are looked up (RFC 3263);
    None asks the system's DNS servers (``/etc/resolv.conf``).

    Digest credentials are sent only to the registrar's realm (bound by its first
    challenge), to ``auth_realms`` (with ``password``) and to the realms of
    ``realm_credentials`` (``{realm: (username, password)}``); a challenge for any
    other realm fails the request.  ``allow_legacy_digest`` answers qop-less MD5
    (RFC 2069), refused by default.

    ``srtp`` left out is "required" when ``aor`` or ``dial`` is a ``sips:`` URI, else
    "optional"; an explicit "off"/"optional" with a ``sips:`` URI raises ValueError
    (issue 14 finding 11: SIPS calls are SRTP only, in every API).  ``rtp_timeout``
    hangs up a call after that many seconds without RTP or RTCP, ``rtp_hold_timeout``
    a call on hold (0: never); see ``MediaConfig``.
    """

    aor: SipURI | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    auth_realms: tuple[str, ...] = ()
    realm_credentials: dict[str, tuple[str, str]] = dataclasses.field(
        default_factory=dict, repr=False
    )
    allow_legacy_digest: bool = False
    ca_file: str | None = None
    verify_tls: bool = True
    keepalive: float = 30.0
    stun_server: tuple[str, int] | None = None
    dns_server: tuple[str, int] | None = None
    rtp_ports: tuple[int, int] = (10000, 20000)
    srtp: str | None = None
    rtp_timeout: float = 60.0
    rtp_hold_timeout: float = 0.0
    max_calls: int | None = None
    dialog_class: type | None = None
    dial: SipURI | None = None
    listen: str | None = None
    trace_sip: bool = False
    state_dir: pathlib.Path = dataclasses.field(
        default_factory=lambda: pathlib.Path.home() / ".local" / "state" / "voiptwisted"
    )
    exit_process: bool = False

    def __post_init__(self) -> None:
        from voiptwisted.media.call import srtp_policy

        #: True when ``srtp`` was given, False when it follows the URIs.
        self.srtp_explicit = self.srtp is not None
        self.srtp = srtp_policy(self.srtp, self.aor, self.dial)
        for name in ("rtp_timeout", "rtp_hold_timeout"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be 0 or more seconds")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", r"\:")


def embedded_listen_description(pem: pathlib.Path, port: int = EMBEDDED_PORT) -> str:
    """The strports description of the embedded TLS listener on 127.0.0.1."""
    path = _escape(str(pem))
    return f"ssl:{port}:interface=127.0.0.1:privateKey={path}:certKey={path}"


def listen_description(description: str, pem: Any) -> str:
    """A server endpoint description for ``--listen``.

    ``tls:`` is accepted as a synonym of Twisted's ``ssl:`` server endpoint; a TLS
    description without ``privateKey=`` gets the embedded self-signed certificate
    (``pem()`` is called to create it only then), so ``--listen tls:5071`` just works.
    """
    kind, sep, rest = description.partition(":")
    if kind.lower() not in ("tls", "ssl"):
        return description
    description = "ssl" + sep + rest
    if "privatekey=" not in rest.lower():
        path = _escape(str(pem()))
        description += f":privateKey={path}:certKey={path}"
    return description


def baresip_command(uri: str) -> str:
    """A copy-paste baresip command that calls *uri* without any account setup.

    ``/uanew`` creates a user agent that does not register (``regint=0``) and
    ``/dial`` calls us; baresip 1.0 does not verify the self-signed certificate.
    """
    return f"baresip -e \"/uanew <sip:me@127.0.0.1;transport=tls>;regint=0\" -e \"/dial {uri}\""


class _Listener(Service):
    """Listens on a server endpoint; a failure is one log line and stops the service."""

    def __init__(self, owner: VoIPService, description: str, factory: Any) -> None:
        self.owner = owner
        self.description = description
        self.factory = factory
        self.port: Any = None

    def startService(self) -> None:
        super().startService()
        from twisted.internet import endpoints

        reactor = self.owner.reactor
        try:
            endpoint = endpoints.serverFromString(reactor, self.description)
        except (ValueError, TypeError, KeyError) as e:
            self._failed(f"bad listen description: {e}")
            return
        d = endpoint.listen(self.factory)

        def listening(port: Any) -> None:
            self.port = port
            if not self.running:
                port.stopListening()

        d.addCallbacks(listening, lambda f: self._failed(f.getErrorMessage()))

    def _failed(self, why: str) -> None:
        where = self.description.split(":privateKey=")[0]
        log.error("cannot listen on {where}: {why}", where=where, why=why)
        self.owner._finish(1, reason="listener failed")

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return defer.maybeDeferred(port.stopListening)
        return None


class VoIPService(MultiService):
    """A SIP user agent as a Twisted service.

    With ``config.aor`` it keeps a registered flow to the AOR's registrar (reconnecting
    with backoff, RFC 5626 keepalive); with ``config.listen`` (or neither: the embedded
    default on TLS 127.0.0.1:5061) it also accepts calls sent straight to it.  Inbound
    calls go to ``config.dialog_class``, at most ``config.max_calls`` at a time over all
    flows (486 Busy Here beyond).  ``config.dial`` places one call once registered and
    stops the reactor when it ends, with ``exit_status`` 0 if it was answered.
    """

    def __init__(self, config: ServiceConfig, reactor: Any = None) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.reactor = reactor
        self.config = config
        self.exit_status: int | None = None
        self.protocols: weakref.WeakSet[Any] = weakref.WeakSet()
        self.client: Any = None
        self.listener: _Listener | None = None
        self.listen_description: str | None = None
        self.embedded_pem: pathlib.Path | None = None
        self.dialed: Any = None
        from voiptwisted.media.call import MediaConfig

        self.media_config = MediaConfig(
            port_range=config.rtp_ports,
            srtp=config.srtp if config.srtp_explicit else None,
            stun_server=config.stun_server,
            reactor=reactor,
            rtp_timeout=config.rtp_timeout,
            rtp_hold_timeout=config.rtp_hold_timeout,
        )
        # Left out, the policy follows the AOR ("required" for sips:) for every call.
        self.media_config.srtp = config.srtp
        if self.dialog_class is None:
            from voiptwisted.apps import EchoDialog

            self.dialog_class = EchoDialog
        self.inbound_dialog_class = self._limited(self.dialog_class)
        if config.aor is not None:
            self._add_client(config.aor)
        if config.listen is not None:
            self._add_listener(listen_description(config.listen, self._pem), config.aor)
        elif config.aor is None:
            embedded_aor = SipURI.parse("sip:echo@127.0.0.1")
            self._add_listener(embedded_listen_description(self._pem()), embedded_aor)

    @property
    def dialog_class(self) -> Any:
        """The IDialog class inbound calls (and ``dial``) use."""
        return self.config.dialog_class

    @dialog_class.setter
    def dialog_class(self, value: Any) -> None:
        self.config.dialog_class = value

    def _pem(self) -> pathlib.Path:
        from voiptwisted.selfsigned import ensure_self_signed

        if self.embedded_pem is None:
            self.embedded_pem = ensure_self_signed(self.config.state_dir)
        return self.embedded_pem

    def _limited(self, base: type) -> type:
        """*base* with a service-wide ``max_calls`` check before its ``call_received``.

        Each flow's protocol counts only its own calls; direct callers each have their
        own flow, so the limit over all flows is enforced here (486, RFC 3261 §21.4.24).
        """
        service = weakref.ref(self)

        def call_received(dialog: Any) -> None:
            owner = service()
            limit = owner.config.max_calls if owner is not None else None
            if limit is not None and owner is not None and owner.active_call_count() > limit:
                log.info("486 to a call: max_calls={n} reached", n=limit)
                dialog.reject(486)
                return
            base.call_received(dialog)

        return type(
            base.__name__,
            (base,),
            {"call_received": call_received, "__module__": base.__module__,
             "__doc__": base.__doc__},
        )

    def _protocol_kwargs(self) -> dict[str, Any]:
        return {
            "dialog_class": self.inbound_dialog_class,
            "media_config": self.media_config,
            "max_calls": self.config.max_calls,
            "trace": self.config.trace_sip,
        }

    def _add_client(self, aor: SipURI) -> None:
        from voiptwisted.sip.connect import build_client, load_instance_id

        if not self.config.verify_tls:
            log.warn(
                "TLS certificate verification is OFF (--no-verify-tls): anyone on the path "
                "can impersonate {host} and read your calls",
                host=aor.host,
            )
        self.client = build_client(
            aor,
            password=self.config.password,
            ca_file=self.config.ca_file,
            verify=self.config.verify_tls,
            keepalive=self.config.keepalive,
            dns_server=self.config.dns_server,
            reactor=self.reactor,
            instance_id=load_instance_id(str(self.config.state_dir)),
            protocol_kwargs=self._protocol_kwargs(),
            on_protocol=self.protocols.add,
            auth_realms=self.config.auth_realms,
            realm_credentials=self.config.realm_credentials,
            allow_legacy_digest=self.config.allow_legacy_digest,
        )
        self.client.setServiceParent(self)

    def _add_listener(self, description: str, aor: SipURI | None) -> None:
        listener_aor = aor or SipURI.parse("sip:voip@127.0.0.1")
        factory = _TrackingFactory(
            self.protocols, aor=listener_aor, clock=self.reactor, **self._protocol_kwargs()
        )
        self.listen_description = description
        self.listener = _Listener(self, description, factory)
        self.listener.setServiceParent(self)

    # -- running -------------------------------------------------------------------------

    def call_uri(self) -> str | None:
        """The URI a direct caller uses to reach our listener (None when not on TLS/TCP)."""
        description = self.listen_description
        if description is None:
            return None
        kind, _, rest = description.partition(":")
        port = rest.split(":", 1)[0]
        if not port.isdigit():
            return None
        transport = "tls" if kind.lower() == "ssl" else "tcp"
        user = self.config.aor.user if self.config.aor is not None else "echo"
        return f"sip:{user}@127.0.0.1:{port};transport={transport}"

    def startService(self) -> None:
        """Start every child; log how to reach us; place the ``dial`` call once registered."""
        super().startService()
        uri = self.call_uri()
        if uri is not None:
            log.info(
                "answering calls with {app} on {uri}",
                app=self.dialog_class.__name__,
                uri=uri,
            )
        if self.config.aor is None and self.config.listen is None and uri is not None:
            log.info("try it: {command}", command=baresip_command(uri))
        if self.client is not None:
            waiting = self.client.client.whenConnected(failAfterFailures=1)
            waiting.addErrback(self._first_connection_failed)
        if self.config.dial is not None and self.client is not None:
            self._dial()

    def _first_connection_failed(self, failure: Any) -> None:
        """One clear line when the registrar cannot be reached; ClientService keeps retrying."""
        if failure.check(defer.CancelledError):
            return
        aor = self.config.aor
        tried = self.client.endpoint.tried
        log.warn(
            "cannot connect to the registrar of {aor} ({targets}): {why}; "
            "retrying with backoff (1-60 s)",
            aor=aor.aor if aor is not None else "?",
            targets=", ".join(tried) if tried else "no address found",
            why=failure.getErrorMessage(),
        )

    def place_call(
        self, target: str | SipURI, session_class: type | None = None, **session_kwargs: Any
    ) -> defer.Deferred[Any]:
        """Call *target* through the registered flow; fires with the answered dialog.

        Waits for the registration first.  ``session_class`` defaults to the dialog class's
        ``session_class`` (the ``--app``'s) or ``EchoSession``.  Fails with ``CallFailed``
        carrying the final status when the call is not answered, or with
        ``RegistrationFailed`` when the registrar refuses us.
        """
        if self.client is None:
            return defer.fail(RuntimeError("place_call needs a registered AOR (config.aor)"))
        from voiptwisted.media.session import EchoSession

        if session_class is None:
            session_class = getattr(self.dialog_class, "session_class", EchoSession)
            session_kwargs = {**getattr(self.dialog_class, "session_kwargs", {}), **session_kwargs}

        def dial(protocol: Any) -> defer.Deferred[Any]:
            dialog = self.dialog_class(sip=protocol)
            self.dialed = dialog
            return dialog.dial(str(target), session_class=session_class, **session_kwargs)

        return self.client.registration.when_registered().addCallback(dial)

    def _dial(self) -> None:
        def on_answer(dialog: Any) -> defer.Deferred[int]:
            log.info("call to {target} answered", target=self.config.dial)
            return dialog.when_ended().addCallback(lambda _: 0)

        def on_failure(failure: Any) -> int:
            log.error(
                "call to {target} failed: {why}",
                target=self.config.dial,
                why=failure.getErrorMessage(),
            )
            return 1

        d = self.place_call(self.config.dial)
        d.addCallbacks(on_answer, on_failure).addCallback(self._finish, reason="call ended")

    def _finish(self, status: int, reason: str = "") -> None:
        """Record the exit status and stop the reactor (``dial`` done or a fatal error)."""
        if self.exit_status is None:
            self.exit_status = status
        if self.config.exit_process and status:
            atexit.register(_exit_with, status)
        if self.reactor.running:
            log.info("stopping ({reason}), exit status {status}", reason=reason, status=status)
            self.reactor.stop()

    # -- stopping ------------------------------------------------------------------------

    def active_dialogs(self) -> list[Any]:
        """Every call any of our flows still tracks."""
        from voiptwisted.sip.dialog import DialogState

        found = []
        for protocol in list(self.protocols):
            for dialog in protocol.dialogs:
                if dialog.state is not DialogState.TERMINATED:
                    found.append(dialog)
        return found

    def active_call_count(self) -> int:
        """How many calls are ringing, up or ending over all flows."""
        return len(self.active_dialogs())

    def stopService(self) -> defer.Deferred[None]:
        """BYE every active call, un-register (Expires: 0), close every flow: within STOP_TIMEOUT.

        Never fails: what did not finish in time is logged in one line.
        """
        dialogs = self.active_dialogs()
        if dialogs:
            log.info("hanging up {n} call(s)", n=len(dialogs))
        byes = [defer.maybeDeferred(dialog.bye) for dialog in dialogs]
        ended: defer.Deferred[Any] = defer.DeferredList(byes, consumeErrors=True)
        ended.addTimeout(STOP_TIMEOUT / 2, self.reactor)
        ended.addErrback(
            lambda f: log.warn("{n} call(s) did not confirm BYE in time", n=len(byes))
        )
        ended.addCallback(lambda _: MultiService.stopService(self))
        ended.addCallback(lambda _: self._close_flows())
        ended.addTimeout(STOP_TIMEOUT, self.reactor)
        ended.addErrback(
            lambda f: log.warn("stopping took too long: {why}", why=f.getErrorMessage())
        )
        return ended

    def _close_flows(self) -> None:
        for protocol in list(self.protocols):
            if protocol.transport is not None:
                protocol.close()


def _exit_with(status: int) -> None:
    """atexit: end the process with *status* once twistd has shut down cleanly.

    twistd always exits 0 after the reactor stops and swallows SystemExit raised by
    shutdown triggers, so the ``dial`` outcome is applied here, after twistd removed
    its pidfile: flush logs and streams, then leave with the status.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


class _TrackingFactory(SIPClientFactory):
    """A server-side factory that remembers its protocols so stopService can BYE their calls."""

    noisy = False

    def __init__(self, protocols: weakref.WeakSet[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._protocols = protocols

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        self._protocols.add(protocol)
        return protocol
