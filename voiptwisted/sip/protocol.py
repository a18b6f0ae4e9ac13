"""``SessionInitiationProtocol``: SIP (RFC 3261) over one TLS or TCP connection.

The protocol is the Twisted adapter of the SIP stack: it frames the byte
stream (RFC 3261 §18.3, RFC 5626 §4.4.1 keepalives), parses messages, routes
requests to server transactions and dialogs and responses to client
transactions (RFC 3261 §17), answers what the UA core answers itself
(OPTIONS, 405, 481, 400, 513), and writes what they produce.  It owns one
:class:`~voiptwisted.sip.transaction.Timers` set so tests can check that a
finished call left no timer, transaction or dialog behind.
"""

from __future__ import annotations

import re
import secrets
import weakref
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from twisted.internet import interfaces
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from voiptwisted import __version__
from voiptwisted.sip.dialog import Dialog
from voiptwisted.sip.digest import DigestClient
from voiptwisted.sip.framing import PING, PONG, FramingError, StreamFramer
from voiptwisted.sip.headers import SIPParseError
from voiptwisted.sip.message import Message, Request, Response
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

__all__ = ["USER_AGENT", "SIPClientFactory", "SessionInitiationProtocol"]

log = Logger()

USER_AGENT = f"voiptwisted/{__version__}"

#: Established calls whose flow died, per factory, until the next flow of that factory adopts them.
_ORPHANS: weakref.WeakKeyDictionary[Any, list[Dialog]] = weakref.WeakKeyDictionary()

#: Methods this UA handles, in Allow order (RFC 3261 §20.5).
ALLOWED_METHODS = (
    SIPMethod.INVITE,
    SIPMethod.ACK,
    SIPMethod.BYE,
    SIPMethod.CANCEL,
    SIPMethod.OPTIONS,
)
#: Option tags we support (RFC 3261 §8.2.2.3 / §20.37).
SUPPORTED_OPTIONS = frozenset({"outbound"})

_MINIMAL_HEADERS = {
    "via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
    "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq",
}  # fmt: skip
# Each pattern below is linear in its input: every quantifier runs over a class the
# next token cannot start with, and each match begins at a line start or a literal.
# An Authorization header with its continuation lines (RFC 3261 §7.3.1).
_AUTH_RE = re.compile(
    rb"(?im)^((?:proxy-)?authorization[ \t]*+:)[^\r\n]*+(?:\r\n[ \t][^\r\n]*+)*+"
)
_CRYPTO_LINE_RE = re.compile(rb"(?i)a=crypto:[^\r\n]*+")
_INLINE_KEY_RE = re.compile(rb"(?i)(inline:)[^\s|]++")


def _redact_keys(line: re.Match[bytes]) -> bytes:
    return _INLINE_KEY_RE.sub(rb"\1<redacted>", line.group())


def redact(data: bytes) -> bytes:
    """*data* with credentials and SRTP keys removed, for trace logs.

    Authorization/Proxy-Authorization values (folded lines included) and every SDES
    ``inline:`` key of an ``a=crypto`` line (RFC 4568 §6.1, several per line with
    MKI) are replaced by ``<redacted>``.  Linear in *data*: a lazy
    ``a=crypto:...*?inline:`` scan made one 108 KB INVITE cost 12 s (issue 14
    finding 2).
    """
    data = _AUTH_RE.sub(rb"\1 <redacted>", data)
    return _CRYPTO_LINE_RE.sub(_redact_keys, data)


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
    try:
        return Response(status_code, None, found)
    except ValueError:
        return None


@implementer(interfaces.IHandshakeListener)
class SessionInitiationProtocol(Protocol):
    """A SIP user agent on one TLS/TCP flow (RFC 3261, RFC 5626 outbound).

    Inbound INVITEs become ``dialog_class.from_request(request, sip=self)``
    and ``call_received()``; :meth:`send_request` runs a client transaction
    for anyone (registration, dialogs).  Media for calls comes from
    ``media_class`` (default ``voiptwisted.media.call.CallMedia``) configured
    by ``media_config``.

    Hooks set by the service: ``registration`` (``connection_made(self)`` /
    ``connection_lost(self, reason)``) and ``keepalive`` (the same plus
    ``pong_received()``).
    """

    dialog_class: type[Dialog] = Dialog
    registration: Any = None
    keepalive: Any = None
    #: Calls one flow may hold, whatever ``max_calls`` says: an INVITE flood gets 503
    #: instead of growing the dialog and transaction tables without bound.
    dialog_limit: int = 1000

    def __init__(
        self,
        *,
        aor: SipURI | str,
        dialog_class: type[Dialog] | None = None,
        media_config: Any = None,
        clock: interfaces.IReactorTime | None = None,
        instance_id: str | None = None,
        credentials: tuple[str, str] | None = None,
        keepalive_interval: float | timedelta = 30.0,
        max_calls: int | None = None,
        outbound_proxy: str | None = None,
        trace: bool = False,
        media_class: Any = None,
    ) -> None:
        self.aor = aor if isinstance(aor, SipURI) else SipURI.parse(aor)
        if dialog_class is not None:
            self.dialog_class = dialog_class
        self._media_class = media_class
        self._media_config = media_config
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.timers = Timers(clock)
        self.instance_id = instance_id
        self.credentials = credentials
        self.digest_client: DigestClient | None = None
        if isinstance(keepalive_interval, timedelta):
            keepalive_interval = keepalive_interval.total_seconds()
        self.keepalive_interval = float(keepalive_interval)
        self.max_calls = max_calls
        self.outbound_proxy = outbound_proxy
        self.trace = trace
        self.public_address: NetworkAddress | None = None
        self.is_secure = False
        self.transactions = TransactionTable()
        self._dialogs: dict[tuple[str, str], Dialog] = {}
        self._inbound: dict[tuple[str, str], Dialog] = {}
        self._framer = StreamFramer()
        self.transport: Any = None
        self._local_address: tuple[Any, NetworkAddress] | None = None

    def __repr__(self) -> str:
        return f"<SessionInitiationProtocol aor={self.aor!s} dialogs={len(self._dialogs)}>"

    @property
    def media_class(self) -> Any:
        """The CallMedia implementation (a seam for tests); default
        ``voiptwisted.media.call.CallMedia``, imported on first use."""
        if self._media_class is None:
            from voiptwisted.media.call import CallMedia

            self._media_class = CallMedia
        return self._media_class

    @media_class.setter
    def media_class(self, value: Any) -> None:
        self._media_class = value

    @property
    def media_config(self) -> Any:
        """The ``MediaConfig`` for calls; a default one on this clock when none was given."""
        if self._media_config is None:
            from voiptwisted.media.call import MediaConfig

            self._media_config = MediaConfig(reactor=self.clock)
        return self._media_config

    @media_config.setter
    def media_config(self, value: Any) -> None:
        self._media_config = value

    # -- counts for tests and monitoring ---------------------------------------------------

    @property
    def dialog_count(self) -> int:
        """Calls this protocol still tracks (ringing, established or ending)."""
        return len(self._dialogs)

    @property
    def transaction_count(self) -> int:
        """Live client and server transactions."""
        return len(self.transactions)

    @property
    def pending_timer_count(self) -> int:
        """Pending ``IDelayedCall`` objects of this protocol, its transactions and dialogs."""
        return len(self.timers)

    # -- addresses and headers -------------------------------------------------------------

    @property
    def local_address(self) -> NetworkAddress | None:
        """Our end of the transport, or None when not connected."""
        transport = self.transport
        if transport is None:
            return None
        if self._local_address is None or self._local_address[0] is not transport:
            host = transport.getHost()
            try:
                text = f"[{host.host}]" if ":" in host.host else host.host
                address = NetworkAddress.parse(f"{text}:{host.port}")
            except (ValueError, AttributeError):
                return None
            self._local_address = (transport, address)
        return self._local_address[1]

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
        transport = "tls" if self.is_secure else "tcp"
        return f"<sip:{where};transport={transport};ob>"

    @property
    def allow_header(self) -> str:
        """The Allow value: the methods we handle, in SIPMethod order."""
        return ", ".join(str(m) for m in ALLOWED_METHODS)

    def _via(self) -> str:
        """A Via for a new request: sent-by, fresh branch, rport (RFC 3261 §8.1.1.7, RFC 3581)."""
        address = self.local_address
        hostport = str(address) if address is not None else "invalid"
        transport = "TLS" if self.is_secure else "TCP"
        return f"SIP/2.0/{transport} {hostport};branch=z9hG4bK{secrets.token_hex(12)};rport"

    def _prepare(self, request: Request, new_branch: bool) -> None:
        headers = request.headers
        if new_branch:
            headers["Via"] = self._via()
        headers.setdefault("Max-Forwards", "70")
        # re-assigning drops accessors cached before the Via was set
        request.headers = headers

    # -- Twisted Protocol ------------------------------------------------------------------

    def connectionMade(self) -> None:
        """Start the flow: no Nagle delay, then registration and keepalive hooks.

        SIP messages are small and latency-bound (a 100 Trying then a 200 OK would
        otherwise wait for the peer's delayed ACK), so ``TCP_NODELAY`` is set.  Over TLS
        the flow is only reported up once the handshake has verified the peer.
        """
        self.is_secure = interfaces.ISSLTransport.providedBy(self.transport)
        no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if no_delay is not None:
            no_delay(True)
        peer = getattr(self.transport.getPeer(), "host", None)
        if self.is_secure:
            log.info("SIP flow to {peer}: TLS handshake", peer=peer)
        else:
            log.info("SIP flow to {peer} up", peer=peer)
        self._adopt_orphans()
        for hook in (self.registration, self.keepalive):
            if hook is not None:
                hook.connection_made(self)

    def handshakeCompleted(self) -> None:
        """``IHandshakeListener``: the TLS handshake (and certificate check) succeeded."""
        peer = getattr(self.transport.getPeer(), "host", None) if self.transport else None
        log.info("SIP flow to {peer} up (TLS)", peer=peer)

    def _adopt_orphans(self) -> None:
        """Carry on established calls of an earlier flow built by the same factory (issue 3)."""
        factory = getattr(self, "factory", None)
        if factory is None:
            return
        waiting = _ORPHANS.pop(factory, [])
        for dialog in waiting:
            if dialog.adoptable:
                dialog.adopt(self)
        if waiting:
            log.info("{n} call(s) carried over to the new flow", n=len(self._dialogs))

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        """Fail pending client transactions; established calls keep their media (issue 3)."""
        self.transport = None
        for transaction in self.transactions:
            if isinstance(transaction, ClientTransaction):
                transaction.abort(reason)
            else:
                transaction._terminate()
        for dialog in list(self._dialogs.values()):
            dialog.connection_lost()
        factory = getattr(self, "factory", None)
        if factory is not None and self._dialogs:
            _ORPHANS.setdefault(factory, []).extend(self._dialogs.values())
        for hook in (self.keepalive, self.registration):
            if hook is not None:
                hook.connection_lost(self, reason)

    def dataReceived(self, data: bytes) -> None:
        try:
            frames = self._framer.feed(data)
        except FramingError as exc:
            self._framing_failed(exc, data)
            return
        for frame in frames:
            if frame == PING:
                if self.transport is not None:
                    self.transport.write(PONG)
            elif frame == PONG:
                if self.keepalive is not None:
                    self.keepalive.pong_received()
            else:
                self._frame_received(frame)
            if self.transport is None:
                return

    def _framing_failed(self, exc: FramingError, data: bytes) -> None:
        """513 or 400 when we can build it, then close: the stream is out of sync (§18.3)."""
        code = exc.status_code if exc.status_code in (400, 513) else 400
        log.warn("closing SIP flow: {error}", error=exc)
        response = minimal_response(data, code)
        if response is not None:
            self.send_message(response)
        if self.transport is not None:
            self.transport.loseConnection()

    def _frame_received(self, frame: bytes) -> None:
        if self.trace:
            log.info("received:\n{text}", text=redact(frame).decode("utf-8", "replace"))
        try:
            message = Message.parse(frame)
        except SIPParseError as exc:
            response = minimal_response(frame, exc.status_code or 400)
            if response is None:
                log.warn("dropped unparseable message: {error}", error=exc)
            else:
                log.info("400 to unparseable request: {error}", error=exc)
                self.send_message(response)
            return
        try:
            if isinstance(message, Request):
                self.request_received(message)
            else:
                self.response_received(message)
        except Exception:
            log.failure("error handling {message!r}", message=message)

    # -- sending ---------------------------------------------------------------------------

    def send_message(self, message: Request | Response) -> None:
        """Write *message* (with our User-Agent) to the flow; dropped when not connected."""
        message.headers.setdefault("User-Agent", USER_AGENT)
        data = bytes(message)
        if self.trace:
            log.info("sending:\n{text}", text=redact(data).decode("utf-8", "replace"))
        if self.transport is not None:
            self.transport.write(data)

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
        )
        if self.transport is None:
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

    # -- inbound requests ------------------------------------------------------------------

    def options_response(self, request: Request) -> Response:
        """200 to OPTIONS with our capabilities (RFC 3261 §11.2)."""
        return Response.from_request(
            request,
            200,
            headers=[
                ("Allow", self.allow_header),
                ("Accept", "application/sdp"),
                ("Supported", "outbound"),
            ],
        )

    def method_not_allowed_response(self, request: Request) -> Response:
        """405 with Allow (RFC 3261 §8.2.1)."""
        return Response.from_request(request, 405, headers=[("Allow", self.allow_header)])

    def request_received(self, request: Request) -> None:
        """Route a request: transaction retransmission, ACK, CANCEL, new call or in-dialog."""
        method = request.method
        if method == "ACK":
            self._ack_received(request)
            return
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
                    self._server_transaction(request).respond(
                        Response.from_request(request, 482)
                    )
                return
        tx = self._server_transaction(request)
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

    def _fail_transaction(self, tx: ServerTransaction, code: int, phrase: str | None = None
                          ) -> None:
        """Answer *tx* with an error unless it already has a final response; never leave it."""
        if tx.final_sent or tx.terminated:
            return
        if phrase is not None:
            phrase = " ".join(phrase.split())[:80] or None
        try:
            tx.respond(Response.from_request(tx.request, code, phrase))
        except Exception:
            log.failure("cannot answer {code}", code=code)
        if (
            isinstance(tx, ServerInviteTransaction)
            and tx.tu is not None
            and tx.tu.invite_transaction is tx
        ):
            # Only the dialog-creating INVITE takes its call down; a failed re-INVITE
            # leaves the session as it was (RFC 3261 §14.2).
            tx.tu.invite_transaction = None
            tx.tu._end()
        if not tx.final_sent:
            tx._terminate()

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
            tx.respond(
                Response.from_request(
                    request, 420, headers=[("Unsupported", ", ".join(unsupported))]
                )
            )
            return
        if request.remote_tag is not None:
            dialog = self.find_dialog(request.call_id, request.remote_tag, request.local_tag)
            if dialog is None:
                tx.respond(Response.from_request(request, 481))
                return
            dialog.request_received(request, tx)
            return
        if method == "INVITE":
            self._new_call(request, tx)
        elif method == "OPTIONS":
            tx.respond(self.options_response(request))
        else:
            tx.respond(Response.from_request(request, 481))

    def _server_transaction(self, request: Request) -> ServerTransaction:
        cls = ServerInviteTransaction if request.method == "INVITE" else ServerNonInviteTransaction
        tx = cls(
            request,
            send=self.send_message,
            timers=self.timers,
            on_terminated=self.transactions.remove,
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
            tx.respond(
                Response.from_request(request, 415, headers=[("Accept", "application/sdp")])
            )
            return
        if self.max_calls is not None and len(self._dialogs) >= self.max_calls:
            log.info("486 to INVITE: max_calls={n} reached", n=self.max_calls)
            tx.respond(Response.from_request(request, 486))
            return
        if len(self._dialogs) >= self.dialog_limit:
            log.warn("503 to INVITE: {n} calls on this flow", n=len(self._dialogs))
            tx.respond(Response.from_request(request, 503, headers=[("Retry-After", "30")]))
            return
        expires = request.expires
        dialog = self.dialog_class.from_request(request, sip=self)
        dialog.invite_transaction = tx
        tx.tu = dialog
        self.register_dialog(dialog)
        dialog.expire_after(expires)
        dialog._call_app(dialog.call_received)

    def _ack_received(self, ack: Request) -> None:
        """ACK: for a non-2xx it matches the INVITE transaction, for a 2xx the dialog (§17.2.3)."""
        tx = self.transactions.match_request(ack)
        if isinstance(tx, ServerInviteTransaction) and tx.state is State.COMPLETED:
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
            tx.respond(Response.from_request(cancel, 481))
            return
        dialog = getattr(invite_tx, "tu", None)
        to_tag = dialog.local_tag if dialog is not None else None
        tx.respond(Response.from_request(cancel, 200, to_tag=to_tag))
        if dialog is not None:
            dialog.cancel_received(cancel)
        elif not invite_tx.final_sent:
            invite_tx.respond(Response.from_request(invite_tx.request, 487))

    # -- inbound responses -----------------------------------------------------------------

    def response_received(self, response: Response) -> None:
        """Hand a response to its client transaction (§17.1.3) or, for a 2xx retransmission
        of an INVITE, to its dialog (§13.2.2.4); anything else is logged and dropped."""
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

    # -- library entry point ---------------------------------------------------------------

    @classmethod
    def run(cls, *args: Any, **kwargs: Any) -> Deferred[SessionInitiationProtocol]:
        """Connect and register; fires with the protocol (``voiptwisted.sip.connect.run``)."""
        from voiptwisted.sip.connect import run

        return run(*args, **kwargs)

    def close(self) -> None:
        """Close the flow."""
        if self.transport is not None:
            self.transport.loseConnection()


class SIPClientFactory(Factory):
    """A plain factory building :class:`SessionInitiationProtocol` with fixed keyword arguments.

    Works with any Twisted endpoint, client or server.  ``registration`` and
    ``keepalive`` are set on each protocol built (the service's hooks).
    """

    protocol = SessionInitiationProtocol

    def __init__(
        self,
        *,
        registration: Any = None,
        keepalive: Any = None,
        protocol_class: type[SessionInitiationProtocol] | None = None,
        **kwargs: Any,
    ) -> None:
        if protocol_class is not None:
            self.protocol = protocol_class
        self.registration = registration
        self.keepalive = keepalive
        self.kwargs = kwargs

    def buildProtocol(self, addr: Any) -> SessionInitiationProtocol:
        proto = self.protocol(**self.kwargs)
        proto.factory = self
        if self.registration is not None:
            proto.registration = self.registration
        if self.keepalive is not None:
            proto.keepalive = self.keepalive
        return proto
