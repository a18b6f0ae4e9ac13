"""``UserAgentCore``: the SIP user agent without I/O (RFC 3261 §8, §12-§17).

The core takes parsed messages with where they came from
(:meth:`UserAgentCore.receive`), routes requests to server transactions and
dialogs and responses to client transactions (RFC 3261 §17), answers what
the UA core answers itself (OPTIONS, 400, 405, 415, 420, 422, 481, 482, 486,
487, 500, 503, 513), builds Via and Contact, and hands every message to send
to one ``send(message, destination)`` callable given by its adapter.  Time
comes only from the injected ``IReactorTime``; it imports no transport and
no reactor.

One core serves one local SIP endpoint as its adapter sees it: a stream
adapter (``voiptwisted.sip.protocol``) makes one core per TLS/TCP flow, a
datagram adapter one core per bound UDP socket.  *destination* is the
``source`` of the request a response answers when the core knows it (server
transactions, the answers to unparseable requests), else None: "the flow's
peer" for a stream adapter, "resolve it" (RFC 3261 §18.2.2 for responses,
§8.1.2 / RFC 3263 for requests) for a datagram adapter.

The core provides :class:`~voiptwisted.interfaces.IUserAgent`, the seam
dialogs use; it creates ``dialog_class.from_request(request, sip=agent)``
for new inbound calls, where *agent* is the IUserAgent dialogs are handed
(the core itself unless the adapter stands in for it).
"""

from __future__ import annotations

import functools
import ipaddress
import secrets
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from voiptwisted import __version__
from voiptwisted.interfaces import IUserAgent
from voiptwisted.sip.dialog import SUPPORTED_OPTIONS, Dialog
from voiptwisted.sip.digest import Credentials
from voiptwisted.sip.headers import SIPParseError, find_tag
from voiptwisted.sip.message import Message, Request, Response
from voiptwisted.sip.refer import replaced_dialog
from voiptwisted.sip.session_timer import TOO_SMALL_PHRASE, session_interval_too_small
from voiptwisted.sip.status import SIPMethod
from voiptwisted.sip.transaction import (
    ClientInviteTransaction,
    ClientNonInviteTransaction,
    ClientTransaction,
    ServerInviteTransaction,
    ServerNonInviteTransaction,
    ServerTransaction,
    State,
    Timers,
    TransactionTable,
    server_key,
)
from voiptwisted.sip.uri import NetworkAddress, SipURI

__all__ = [
    "ALLOWED_METHODS",
    "SUPPORTED_OPTIONS",
    "USER_AGENT",
    "UserAgentCore",
    "minimal_response",
]

log = Logger()

USER_AGENT = f"voiptwisted/{__version__}"

#: Methods this UA handles, in Allow order (RFC 3261 §20.5): exactly those implemented.
#: INFO (RFC 6086, DTMF bodies), UPDATE (RFC 3311), PRACK (RFC 3262), REFER and NOTIFY
#: (RFC 3515 transfer) are answered by the dialog; outside one they get 481 like any
#: in-dialog request without its dialog (a REFER outside a dialog 403).
ALLOWED_METHODS = (
    SIPMethod.INVITE,
    SIPMethod.ACK,
    SIPMethod.BYE,
    SIPMethod.CANCEL,
    SIPMethod.OPTIONS,
    SIPMethod.NOTIFY,
    SIPMethod.PRACK,
    SIPMethod.INFO,
    SIPMethod.REFER,
    SIPMethod.UPDATE,
)

_MINIMAL_HEADERS = {
    "via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
    "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq",
}  # fmt: skip


def minimal_response(data: bytes, status_code: int) -> Response | None:
    """A response to a request that could not be parsed, or None when none can be built.

    RFC 3261 §8.2.6.2 needs Via, From, To, Call-ID and CSeq copied; they are
    picked out of the raw header block leniently.  Responses and data
    without those headers get nothing.
    """
    head = data.split(b"\r\n\r\n", 1)[0][:16384].decode("latin-1")
    lines = head.split("\r\n")
    if not lines or lines[0].startswith("SIP/") or " SIP/" not in lines[0]:
        return None
    found: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        key = _MINIMAL_HEADERS.get(name.strip(" \t").lower()) if sep else None
        if key is not None:
            found.append((key, value.strip(" \t")))
    if {name for name, _ in found} != {"Via", "From", "To", "Call-ID", "CSeq"}:
        return None
    found = [
        (name, _with_to_tag(value) if name == "To" else value) for name, value in found
    ]
    try:
        return Response(status_code, None, found)
    except ValueError:
        return None


def _with_to_tag(value: str) -> str:
    """*value* (a raw To value) with a new ``tag`` unless it has one (RFC 3261 §8.2.6.2)."""
    if find_tag(value) is not None:
        return value
    return f"{value};tag={new_tag()}"


def new_tag() -> str:
    """A fresh To tag for a response that creates no dialog (RFC 3261 §19.3: random)."""
    return secrets.token_hex(8)


def _source_host_port(source: Any) -> tuple[str, int] | None:
    """``(host, port)`` of an adapter's *source*: an ``IAddress`` or a ``(host, port)`` pair."""
    if isinstance(source, tuple) and len(source) >= 2:
        host, port = source[0], source[1]
    else:
        host, port = getattr(source, "host", None), getattr(source, "port", None)
    if isinstance(host, str) and isinstance(port, int):
        return host, port
    return None


def _same_ip(sent_by: str, source: str) -> bool:
    """Whether the Via sent-by host is an IP address equal to the source's (§18.2.1)."""
    if sent_by == source:
        # The usual case (no NAT, no received= needed): one cached parse, not two.
        return _ip_address(source) is not None
    first, second = _ip_address(sent_by.strip("[]")), _ip_address(source)
    return first is not None and first == second


@functools.lru_cache(maxsize=256)
def _ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """*text* as an address, or None: cached, as a flow's peers are few and parsing one
    builds an object per octet check (issue 16: 2 per request received)."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


#: What the core hands out: ``send(message, destination)``; see the module docstring.
SendCallable = Callable[[Request | Response, Any], None]


@implementer(IUserAgent)
class UserAgentCore:
    """The UA core of one local SIP endpoint: routing, transaction and dialog tables.

    *send* is called with each message to send and its destination (see the
    module docstring); *reactor* is the injected reactor: its ``IReactorTime`` runs every
    timer, and calls' media binds RTP sockets with its ``IReactorUDP``.  The adapter
    reports its transport through :meth:`connection_made` (our address,
    whether it is secure) and :meth:`connection_lost`; until then requests
    fail at once with ``ConnectionDone``.
    """

    #: Calls one core may hold, whatever ``max_calls`` says: an INVITE flood gets 503
    #: instead of growing the dialog and transaction tables without bound.
    dialog_limit: int = 1000
    #: False for a datagram adapter (UDP): transactions then retransmit and linger
    #: (RFC 3261 §17), Via and Contact name UDP.
    reliable: bool = True

    def __init__(
        self,
        *,
        aor: SipURI | str,
        send: SendCallable,
        reactor: IReactorTime,
        dialog_class: type[Dialog] | None = None,
        media_class: Any = None,
        media_config: Any = None,
        media_defaults: Callable[[IReactorTime], tuple[Any, Any]] | None = None,
        credentials: Credentials | tuple[str, str] | None = None,
        max_calls: int | None = None,
        outbound_proxy: str | None = None,
        agent: Any = None,
    ) -> None:
        self.aor = aor if isinstance(aor, SipURI) else SipURI.parse(aor)
        self._send = send
        self.reactor = reactor
        self.timers = Timers(reactor)
        self.dialog_class: type[Dialog] = dialog_class if dialog_class is not None else Dialog
        self._media_class = media_class
        self._media_config = media_config
        self._media_defaults = media_defaults
        if isinstance(credentials, tuple):
            credentials = Credentials(*credentials)
        #: Answers 401/407 to our requests, only for the realms it allows (issue 14).
        self.credentials: Credentials | None = credentials
        self.max_calls = max_calls
        self.outbound_proxy = outbound_proxy
        #: The IUserAgent new inbound dialogs get as ``sip`` (the adapter may stand in).
        self.agent: Any = agent if agent is not None else self
        self.is_connected = False
        self.local_address: NetworkAddress | None = None
        self.public_address: NetworkAddress | None = None
        self.is_secure = False
        self.transactions = TransactionTable()
        self._dialogs: dict[tuple[str, str], Dialog] = {}
        self._inbound: dict[tuple[str, str], Dialog] = {}
        #: The host's admission check (a hook; None admits everything): called with each new
        #: INVITE and out-of-dialog OPTIONS, it returns None to take it or the seconds of a
        #: Retry-After to answer 503 with (RFC 3261 §21.5.4, §11.2): draining, or full.
        self.admission: Callable[[Request], int | None] | None = None
        #: Finds one of the UA's dialogs by ``(call_id, local_tag, remote_tag)`` for an
        #: INVITE with Replaces (RFC 3891 §3), over every flow of a host that runs several
        #: cores; None: this core's own (:meth:`find_dialog`).
        self.replaces_lookup: Callable[[str, str, str], Dialog | None] | None = None
        #: An optional observer (a hook for metrics and call records): its
        #: ``message_in(message)`` / ``message_out(message)`` see every message received and
        #: sent, ``dialog_registered(dialog)`` every dialog this core starts tracking.
        self.observer: Any = None

    def __repr__(self) -> str:
        return f"<UserAgentCore aor={self.aor!s} dialogs={len(self._dialogs)}>"

    @property
    def clock(self) -> IReactorTime:
        """:attr:`reactor`, named for what the timers use of it (``IUserAgent.clock``)."""
        return self.reactor

    def _resolve_media(self) -> None:
        """Fill in the media class and config the adapter supplies by default.

        The core sits below the media adapters (``voiptwisted.media.call`` binds sockets),
        so it never imports them: *media_defaults*, given by the adapter, names them.
        """
        if self._media_defaults is None:
            raise RuntimeError(
                "UserAgentCore has no media class: pass media_class= and media_config= "
                "(or media_defaults=) to answer or place calls with media"
            )
        media_class, media_config = self._media_defaults(self.reactor)
        if self._media_class is None:
            self._media_class = media_class
        if self._media_config is None:
            self._media_config = media_config

    @property
    def media_class(self) -> Any:
        """The CallMedia implementation for this core's calls (a seam for tests)."""
        if self._media_class is None:
            self._resolve_media()
        return self._media_class

    @media_class.setter
    def media_class(self, value: Any) -> None:
        self._media_class = value

    @property
    def media_config(self) -> Any:
        """The ``MediaConfig`` for calls; the adapter's default one when none was given.

        One given without a reactor binds its calls' RTP on this UA's: the reactor is
        injected once, where the UA is built, and passed down."""
        if self._media_config is None:
            self._resolve_media()
        config = self._media_config
        if getattr(config, "reactor", False) is None:
            config.reactor = self.reactor
        return config

    @media_config.setter
    def media_config(self, value: Any) -> None:
        self._media_config = value

    # -- the adapter's transport -----------------------------------------------------------

    def connection_made(self, local_address: NetworkAddress | None, secure: bool) -> None:
        """The adapter's transport is up: our sent-by for Via/Contact and whether it is TLS."""
        self.is_connected = True
        self.local_address = local_address
        self.is_secure = secure

    def connection_lost(self, reason: Failure | BaseException = ConnectionDone) -> None:
        """Fail pending client transactions, drop server ones, tell every dialog."""
        self.is_connected = False
        self.local_address = None
        for transaction in self.transactions:
            if isinstance(transaction, ClientTransaction):
                transaction.abort(reason)
            else:
                transaction.terminate()
        for dialog in list(self._dialogs.values()):
            dialog.connection_lost()

    # -- counts for tests and monitoring ---------------------------------------------------

    @property
    def dialog_count(self) -> int:
        """Calls this core still tracks (ringing, established or ending)."""
        return len(self._dialogs)

    @property
    def transaction_count(self) -> int:
        """Live client and server transactions."""
        return len(self.transactions)

    @property
    def pending_timer_count(self) -> int:
        """Pending ``IDelayedCall`` objects of this core, its transactions and dialogs."""
        return len(self.timers)

    # -- addresses and headers -------------------------------------------------------------

    @property
    def media_host(self) -> str:
        """The address to put in SDP: configured public host, learned public address, or local."""
        configured = getattr(self.media_config, "public_host", None)
        if configured:
            return str(configured)
        address = self.public_address or self.local_address
        return str(address.host) if address is not None else "127.0.0.1"

    @property
    def contact(self) -> str:
        """Our Contact value, as the reference builds it, with ``ob`` (RFC 5626 §5).

        ``<sips:user@host:port;ob>`` for a sips AOR, else
        ``<sip:user@host:port;transport=tls|tcp;ob>``; the host is the public
        address learned from Via ``received``/``rport`` when known.
        """
        return self.contact_for()

    def contact_for(self, *uris: str | None) -> str:
        """:attr:`contact`, in its ``sips:`` form when any of the bare *uris* is a SIPS URI.

        RFC 3261 §8.1.1.8 and §12.1.1: a request whose Request-URI or top Route
        is SIPS, and a dialog set up by such a request, MUST carry a SIPS
        Contact.  Only a TLS flow can give one.
        """
        address = self.public_address or self.local_address
        hostport = str(address) if address is not None else "invalid"
        where = f"{self.aor.user}@{hostport}" if self.aor.user else hostport
        sips = self.is_secure and any(
            uri is not None and uri[:5].lower() == "sips:" for uri in uris
        )
        if self.aor.scheme == "sips" or sips:
            return f"<sips:{where};ob>"
        transport = "udp" if not self.reliable else "tls" if self.is_secure else "tcp"
        return f"<sip:{where};transport={transport};ob>"

    @property
    def allow_header(self) -> str:
        """The Allow value: the methods we handle, in SIPMethod order."""
        return ", ".join(str(m) for m in ALLOWED_METHODS)

    def via(self) -> str:
        """A Via for a new request: sent-by, fresh branch, rport (RFC 3261 §8.1.1.7, RFC 3581)."""
        address = self.local_address
        hostport = str(address) if address is not None else "invalid"
        transport = "UDP" if not self.reliable else "TLS" if self.is_secure else "TCP"
        return f"SIP/2.0/{transport} {hostport};branch=z9hG4bK{secrets.token_hex(12)};rport"

    def _prepare(self, request: Request, new_branch: bool) -> None:
        headers = request.headers
        if new_branch:
            headers["Via"] = self.via()
        headers.setdefault("Max-Forwards", "70")
        # re-assigning drops accessors cached before the Via was set
        request.headers = headers

    # -- sending ---------------------------------------------------------------------------

    def send_message(self, message: Request | Response, destination: Any = None) -> None:
        """Hand *message* (with our User-Agent) to the adapter, for *destination*."""
        message.headers.setdefault("User-Agent", USER_AGENT)
        if self.observer is not None:
            self.observer.message_out(message)
        self._send(message, destination)

    def send_stateless(self, request: Request) -> None:
        """Send a request outside any transaction (the ACK for a 2xx, §13.2.2.4): new Via."""
        self._prepare(request, new_branch=True)
        self.send_message(request)

    def start_client_transaction(
        self,
        request: Request,
        *,
        on_provisional: Callable[[Response], None] | None = None,
        new_branch: bool = True,
    ) -> ClientTransaction:
        """Run a client transaction for *request* (Via with a new branch unless *new_branch*
        is False, as for CANCEL, §9.1; Max-Forwards; User-Agent) and return it."""
        self._prepare(request, new_branch)
        cls = ClientInviteTransaction if request.method == "INVITE" else ClientNonInviteTransaction
        transaction = cls(
            request,
            send=self.send_message,
            timers=self.timers,
            on_terminated=self.transactions.remove,
            on_provisional=on_provisional,
            reliable=self.reliable,
        )
        if not self.is_connected:
            transaction.abort(ConnectionDone("SIP flow is not connected"))
            return transaction
        self.transactions.add(transaction)
        transaction.start()
        return transaction

    def send_request(
        self,
        request: Request,
        *,
        provisional_callback: Callable[[Response], None] | None = None,
        new_branch: bool = True,
    ) -> Deferred[Response]:
        """Send *request* in a client transaction; fire with the final response.

        Fails with ``TransactionTimeout`` on Timer B/F and with the
        connection-lost reason if the flow goes away first.  *request* is
        modified in place (Via, Max-Forwards).
        """
        return self.start_client_transaction(
            request, on_provisional=provisional_callback, new_branch=new_branch
        ).deferred

    # -- dialogs ---------------------------------------------------------------------------

    def register_dialog(self, dialog: Dialog) -> None:
        """Track *dialog* by ``(call_id, local_tag)`` until it ends."""
        self._dialogs[dialog.call_id, dialog.local_tag] = dialog
        if dialog.inbound:
            self._inbound[dialog.call_id, dialog.remote_tag or ""] = dialog
        if self.observer is not None:
            self.observer.dialog_registered(dialog)

    def drop_dialog(self, dialog: Dialog) -> None:
        """Forget *dialog* (idempotent)."""
        if self._dialogs.get((dialog.call_id, dialog.local_tag)) is dialog:
            del self._dialogs[dialog.call_id, dialog.local_tag]
        if self._inbound.get((dialog.call_id, dialog.remote_tag or "")) is dialog:
            del self._inbound[dialog.call_id, dialog.remote_tag or ""]

    def find_dialog(
        self, call_id: str, local_tag: str | None, remote_tag: str | None
    ) -> Dialog | None:
        """The dialog with these IDs (RFC 3261 §12: Call-ID, local and remote tag)."""
        if local_tag is None:
            return None
        dialog = self._dialogs.get((call_id, local_tag))
        if dialog is None or (dialog.remote_tag is not None and dialog.remote_tag != remote_tag):
            return None
        return dialog

    @property
    def dialogs(self) -> list[Dialog]:
        return list(self._dialogs.values())

    # -- inbound messages ------------------------------------------------------------------

    def receive(self, message: Message, source: Any = None) -> None:
        """A parsed message from *source* (the adapter's peer address): route it.

        Never raises: an error while handling it is logged (RFC 3261 §8.2: a
        request still gets its 400/500 from :meth:`request_received`).
        """
        try:
            if isinstance(message, Request):
                self.request_received(message, source)
            else:
                self.response_received(message)
        except Exception:
            log.failure("error handling {message!r}", message=message)

    def receive_unparseable(self, data: bytes, status_code: int, source: Any = None) -> bool:
        """A message from *source* that could not be parsed or framed (RFC 3261 §8.2.6.2,
        §18.3, §21.4.1 / §21.5.7): answer 400 or 513 when it is a request whose headers
        can be picked out.  True when an answer was handed out."""
        response = minimal_response(data, status_code)
        if response is None:
            return False
        self.send_message(response, source)
        return True

    @staticmethod
    def reply(
        request: Request,
        status_code: int,
        phrase: str | None = None,
        *,
        headers: Any = None,
        to_tag: str | None = None,
    ) -> Response:
        """A response the core gives itself: with a To tag unless it is 100 (RFC 3261 §8.2.6.2:
        the UAS MUST add one to every other response when the request's To has none).

        *to_tag* is the dialog's tag when the request belongs to one, else a new tag.
        """
        if status_code != 100 and to_tag is None:
            to_tag = new_tag()
        return Response.from_request(request, status_code, phrase, headers=headers, to_tag=to_tag)

    def options_response(self, request: Request) -> Response:
        """200 to OPTIONS with our capabilities (RFC 3261 §11.2)."""
        return self.reply(
            request,
            200,
            headers=[
                ("Allow", self.allow_header),
                ("Accept", "application/sdp"),
                ("Supported", ", ".join(sorted(SUPPORTED_OPTIONS))),
            ],
        )

    def method_not_allowed_response(self, request: Request) -> Response:
        """405 with Allow (RFC 3261 §8.2.1)."""
        return self.reply(request, 405, headers=[("Allow", self.allow_header)])

    def request_received(self, request: Request, source: Any = None) -> None:
        """Route a request: transaction retransmission, ACK, CANCEL, new call or in-dialog."""
        if self.observer is not None:
            self.observer.message_in(request)
        method = request.method
        if method == "ACK":
            self._ack_received(request)
            return
        self._stamp_via(request, source)
        existing = self.transactions.match_request(request)
        if existing is not None:
            existing.request_received(request)
            return
        if method == "INVITE" and request.remote_tag is None:
            known = self._known_invite(request)
            if known is not None:
                if known.branch == request.branch:
                    log.debug("INVITE retransmission for an answered call dropped")
                else:
                    # RFC 3261 §8.2.2.2: the same request arriving by another path.
                    self._server_transaction(request, source).respond(self.reply(request, 482))
                return
        tx = self._server_transaction(request, source)
        if isinstance(tx, ServerInviteTransaction):
            tx.start()
        try:
            self._dispatch_request(request, tx)
        except SIPParseError as exc:
            # A header needed only now (Contact, Expires ...) is malformed: RFC 3261 §21.4.1.
            log.info("400 to {method}: {error}", method=method, error=exc)
            self._fail_transaction(tx, 400, str(exc))
        except Exception:
            log.failure("error handling {method} (Call-ID {call_id})", method=method,
                        call_id=request.call_id)
            self._fail_transaction(tx, 500)

    @staticmethod
    def _stamp_via(request: Request, source: Any) -> None:
        """Add ``received`` (and fill in a requested ``rport``) to the top Via, so our
        responses find the way back (RFC 3261 §18.2.1, RFC 3581 §4).

        ``received`` goes in when the sent-by host is a name or an address other than
        the source's, and always when ``rport`` was asked for; other Via values stay
        exactly as they came.
        """
        where = _source_host_port(source)
        if where is None:
            return
        host, port = where
        via = request.top_via
        wants_rport = via.rport is True
        if not wants_rport and _same_ip(via.host, host):
            return
        via.params["received"] = host.strip("[]")
        if wants_rport:
            via.params["rport"] = str(port)
        headers = request.headers
        lines = headers.getlist("Via")
        headers["Via"] = str(via)
        for line in lines[1:]:
            headers.add("Via", line)
        # re-assigning drops accessors cached before (the top Via object is reused)
        request.headers = headers

    def _fail_transaction(self, tx: ServerTransaction, code: int, phrase: str | None = None
                          ) -> None:
        """Answer *tx* with an error unless it already has a final response; never leave it."""
        if tx.final_sent or tx.terminated:
            return
        if phrase is not None:
            phrase = " ".join(phrase.split())[:80] or None
        tu = getattr(tx, "tu", None)
        try:
            tx.respond(self.reply(tx.request, code, phrase, to_tag=getattr(tu, "local_tag", None)))
        except Exception:
            log.failure("cannot answer {code}", code=code)
        if (
            isinstance(tx, ServerInviteTransaction)
            and tx.tu is not None
            and tx.tu.invite_transaction is tx
        ):
            # Only the dialog-creating INVITE takes its call down; a failed re-INVITE
            # leaves the session as it was (RFC 3261 §14.2).
            tx.tu.invite_failed()
        if not tx.final_sent:
            tx.terminate()

    def _dispatch_request(self, request: Request, tx: ServerTransaction) -> None:
        method = request.method
        if method not in ALLOWED_METHODS:
            log.info("405 to {method}", method=method)
            tx.respond(self.method_not_allowed_response(request))
            return
        if method == "CANCEL":
            self._cancel_received(request, tx)
            return
        unsupported = [
            tag for tag in request.headers.getlist("Require") if tag not in SUPPORTED_OPTIONS
        ]
        if unsupported:
            # RFC 3261 §8.2.2.3: 420 listing what we do not support.
            tx.respond(self.reply(request, 420, headers=[("Unsupported", ", ".join(unsupported))]))
            return
        encodings = [
            coding
            for coding in request.headers.getlist("Content-Encoding")
            if coding.strip().lower() != "identity"
        ]
        if encodings and request.body:
            # RFC 3261 §8.2.3: a body in a content coding we cannot decode gets 415 listing
            # the ones we accept; it never reaches the application.
            log.info("415 to {method}: Content-Encoding {codings}", method=method,
                     codings=", ".join(encodings)[:80])
            tx.respond(self.reply(request, 415, headers=[("Accept-Encoding", "identity")]))
            return
        if request.remote_tag is not None:
            dialog = self.find_dialog(request.call_id, request.remote_tag, request.local_tag)
            if dialog is None:
                tx.respond(self.reply(request, 481))
                return
            dialog.request_received(request, tx)
            return
        if method == "INVITE":
            self._new_call(request, tx)
        elif method == "REFER":
            # RFC 3515 §2.4.2: we take transfers only inside a call (no implicit
            # subscription outside one).
            tx.respond(self.reply(request, 403, "REFER Only In A Dialog"))
        elif method == "OPTIONS":
            retry_after = self.admission(request) if self.admission is not None else None
            if retry_after is not None:
                # A load balancer's health probe: not taking calls now (RFC 3261 §11.2).
                tx.respond(self.reply(request, 503, headers=[("Retry-After", str(retry_after))]))
            else:
                tx.respond(self.options_response(request))
        else:
            tx.respond(self.reply(request, 481))

    def _server_transaction(self, request: Request, source: Any = None) -> ServerTransaction:
        cls = ServerInviteTransaction if request.method == "INVITE" else ServerNonInviteTransaction

        def send(message: Request | Response) -> None:
            self.send_message(message, source)

        tx = cls(
            request,
            send=send,
            timers=self.timers,
            on_terminated=self.transactions.remove,
            reliable=self.reliable,
        )
        self.transactions.add(tx)
        return tx

    def _known_invite(self, request: Request) -> Request | None:
        """The INVITE with this Call-ID, From tag and CSeq that already made a call, if any:
        *request* is its retransmission or, by another branch, a merged request."""
        dialog = self._inbound.get((request.call_id, request.local_tag or ""))
        if dialog is None or dialog.invite_request is None:
            return None
        invite = dialog.invite_request
        return invite if invite.cseq[0] == request.cseq[0] else None

    def _new_call(self, request: Request, tx: ServerTransaction) -> None:
        """A new inbound INVITE (RFC 3261 §13.3): 100 Trying, then the dialog class decides."""
        content_type = (request.content_type or "").split(";")[0].strip().lower()
        if request.body and content_type != "application/sdp":
            tx.respond(self.reply(request, 415, headers=[("Accept", "application/sdp")]))
            return
        retry_after = self.admission(request) if self.admission is not None else None
        if retry_after is not None:
            log.info("503 to INVITE: not taking calls (Retry-After {n})", n=retry_after)
            tx.respond(self.reply(request, 503, headers=[("Retry-After", str(retry_after))]))
            return
        replaced = None
        if "Replaces" in request.headers:
            # RFC 3891 §3: the call it replaces must be one of ours; it takes no new slot.
            replaced, refusal = replaced_dialog(request, self.replaces_lookup or self.find_dialog)
            if refusal is not None:
                log.info("{code} to INVITE with Replaces", code=refusal)
                tx.respond(self.reply(request, refusal))
                return
        if (
            replaced is None
            and self.max_calls is not None
            and len(self._dialogs) >= self.max_calls
        ):
            log.info("486 to INVITE: max_calls={n} reached", n=self.max_calls)
            tx.respond(self.reply(request, 486))
            return
        if len(self._dialogs) >= self.dialog_limit:
            log.warn("503 to INVITE: {n} calls on this flow", n=len(self._dialogs))
            tx.respond(self.reply(request, 503, headers=[("Retry-After", "30")]))
            return
        floor = session_interval_too_small(request)
        if floor is not None:
            # RFC 4028 §9: the session interval asked for is below our Min-SE.
            headers = [("Min-SE", str(floor))]
            tx.respond(self.reply(request, 422, TOO_SMALL_PHRASE, headers=headers))
            return
        expires = request.expires
        dialog = self.dialog_class.from_request(request, sip=self.agent)
        dialog.invite_transaction = tx
        dialog.replacing = replaced
        tx.tu = dialog
        self.register_dialog(dialog)
        dialog.expire_after(expires)
        dialog.deliver_call()

    def _ack_received(self, ack: Request) -> None:
        """ACK: for a non-2xx it matches the INVITE transaction, for a 2xx the dialog (§17.2.3)."""
        tx = self.transactions.match_request(ack)
        if isinstance(tx, ServerInviteTransaction) and tx.state in (
            State.COMPLETED,
            State.CONFIRMED,
        ):
            # Confirmed (UDP, Timer I): a retransmitted ACK is absorbed (§17.2.1).
            tx.ack_received(ack)
            return
        dialog = self.find_dialog(ack.call_id, ack.remote_tag, ack.local_tag)
        if dialog is not None:
            dialog.ack_received(ack)
        else:
            log.debug("ACK matching nothing dropped")

    def _cancel_received(self, cancel: Request, tx: ServerTransaction) -> None:
        """CANCEL matches the INVITE server transaction by branch (RFC 3261 §9.2)."""
        branch, _ = server_key(cancel)
        invite_tx = self.transactions.find_server(branch, "INVITE")
        if invite_tx is None:
            answered = self._inbound.get((cancel.call_id, cancel.local_tag or ""))
            invite = answered.invite_request if answered is not None else None
            if answered is not None and invite is not None and invite.branch == cancel.branch:
                # RFC 6026 §7.1: the CANCEL crossed our 2xx; it matched the INVITE, which is
                # already answered, so it gets 200 and changes nothing (RFC 3261 §9.2).
                tx.respond(self.reply(cancel, 200, to_tag=answered.local_tag))
                return
            tx.respond(self.reply(cancel, 481))
            return
        dialog = getattr(invite_tx, "tu", None)
        to_tag = dialog.local_tag if dialog is not None else None
        tx.respond(self.reply(cancel, 200, to_tag=to_tag))
        if dialog is not None:
            dialog.cancel_received(cancel)
        elif not invite_tx.final_sent:
            invite_tx.respond(self.reply(invite_tx.request, 487, to_tag=to_tag))

    # -- inbound responses -----------------------------------------------------------------

    def response_received(self, response: Response) -> None:
        """Hand a response to its client transaction (§17.1.3) or, for a 2xx retransmission
        of an INVITE, to its dialog (§13.2.2.4); anything else is logged and dropped.

        A response with more than one Via was meant for someone upstream of us and is
        dropped (RFC 3261 §8.1.3.3)."""
        if len(response.via) > 1:
            log.info("response with {n} Via values dropped (RFC 3261 §8.1.3.3)",
                     n=len(response.via))
            return
        if self.observer is not None:
            self.observer.message_in(response)
        self._learn_public_address(response)
        tx = self.transactions.match_response(response)
        if tx is not None:
            tx.response_received(response)
            return
        if response.cseq[1] == "INVITE" and 200 <= response.status_code < 300:
            dialog = self._dialogs.get((response.call_id, response.local_tag or ""))
            if dialog is not None:
                dialog.response_retransmitted(response)
                return
        log.debug("unmatched {response!r} dropped", response=response)

    def _learn_public_address(self, response: Response) -> None:
        """RFC 3581 §4: our address as the server saw it, from the top Via's received/rport."""
        try:
            via = response.top_via
        except SIPParseError:
            return
        learned = via.public_address(self.public_address, 5061 if self.is_secure else 5060)
        if learned is not None:
            self.public_address = learned
