"""SIP transactions over reliable and unreliable transports (RFC 3261 §17).

Four small state machines -- client INVITE, client non-INVITE, server INVITE
and server non-INVITE -- that run their timers on an injected
``IReactorTime`` through a :class:`Timers` set (so the protocol can count and
cancel every timer it owns) and write messages through a ``send`` callable.
They do no I/O themselves.

Each transaction knows whether its transport is reliable (``reliable=True``,
the default: TLS, TCP).  Over a reliable transport the retransmission timers
A, E and G are never armed and the "wait for retransmissions" timers D, I, J
and K are zero (RFC 3261 §17.1.1.2, §17.1.2.2, §17.2.1, §17.2.2): a
transaction reaches Terminated as soon as it completes.  Over UDP
(``reliable=False``) the request is retransmitted by Timer A (INVITE, T1
doubling) or Timer E (non-INVITE, T1 doubling up to T2), a non-2xx final
response to an INVITE by Timer G (T1 doubling up to T2) until the ACK, and a
completed transaction lingers to absorb retransmissions: Timer D = 32 s,
I = T4, J = 64*T1, K = T4.  The safety timers run on both: Timer B (INVITE
client, 64*T1), Timer F (non-INVITE client, 64*T1) and Timer H (INVITE server
waiting for the ACK of a non-2xx final response, 64*T1).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from voiptwisted.sip.message import Request, Response

__all__ = [
    "T1",
    "T2",
    "T4",
    "TIMER_D",
    "ClientInviteTransaction",
    "ClientNonInviteTransaction",
    "ClientTransaction",
    "ServerInviteTransaction",
    "ServerNonInviteTransaction",
    "ServerTransaction",
    "State",
    "Timers",
    "Transaction",
    "TransactionTable",
    "TransactionTimeout",
    "server_key",
]

log = Logger()

#: RTT estimate (RFC 3261 §17.1.1.1), seconds.
T1 = 0.5
#: Maximum retransmit interval for non-INVITE requests and INVITE 2xx responses (§17.1.2.2).
T2 = 4.0
#: Maximum duration a message remains in the network (§17.1.2.2).
T4 = 5.0

#: Timer D for unreliable transports: at least 32 s of absorbing final responses (§17.1.1.2).
TIMER_D = 32.0

#: Magic cookie marking an RFC 3261 branch (§8.1.1.7).
MAGIC_COOKIE = "z9hG4bK"


class TransactionTimeout(Exception):
    """A client transaction got no final response in time (Timer B or F, RFC 3261 §17.1)."""

    def __init__(self, method: str, timer: str, seconds: float) -> None:
        super().__init__(f"{method} transaction timed out (Timer {timer}, {seconds:g} s)")
        self.method = method
        self.timer = timer
        self.seconds = seconds


class State(enum.Enum):
    """Transaction states (RFC 3261 §17, figures 5-8)."""

    CALLING = "Calling"
    TRYING = "Trying"
    PROCEEDING = "Proceeding"
    COMPLETED = "Completed"
    CONFIRMED = "Confirmed"
    TERMINATED = "Terminated"


class Timers:
    """The set of live delayed calls one owner (a protocol) has scheduled.

    Every timer goes through ``clock.callLater``; a timer leaves the set when
    it fires or is cancelled, so ``len(timers)`` is the number of pending
    ``IDelayedCall`` objects -- what tests check to prove nothing is left
    behind when a call ends.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self._active: set[IDelayedCall] = set()

    def call_later(self, delay: float, function: Callable[..., Any], *args: Any) -> IDelayedCall:
        """Schedule *function* after *delay* seconds and track it until it runs or is cancelled.

        The delayed call is reached from ``fire`` only through *pending*, emptied when it
        fires: Twisted keeps a fired call's ``func``, so a closure holding the call itself
        would make a reference cycle (call -> fire -> call) keeping *function* and *args*
        -- over UDP a lingering transaction and its messages, ended by Timer J, K, D or I
        -- alive until the cyclic garbage collector runs, whose full passes then stalled
        the reactor for hundreds of ms under load.  Freed by reference counting instead.
        """
        pending: list[IDelayedCall] = []

        def fire() -> None:
            self._active.discard(pending.pop())
            function(*args)

        call = self.clock.callLater(delay, fire)
        pending.append(call)
        self._active.add(call)
        return call

    def cancel(self, call: IDelayedCall | None) -> None:
        """Cancel *call* if it is still pending; ``None`` and spent calls are ignored."""
        if call is None:
            return
        self._active.discard(call)
        if call.active():
            call.cancel()

    def cancel_all(self) -> None:
        """Cancel every pending timer (used when the owner goes away)."""
        for call in list(self._active):
            self.cancel(call)

    def __len__(self) -> int:
        return len(self._active)


def _branch_of(message: Request | Response) -> str:
    """Return the top Via branch, or an RFC 2543 style substitute key (RFC 3261 §17.2.3)."""
    branch = message.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        return branch
    # Pre-RFC 3261 peers: match on the request's identifying fields instead.
    try:
        number, _ = message.cseq
    except Exception:
        number = 0
    return f"2543:{message.call_id}:{message.local_tag}:{number}:{branch}"


def server_key(request: Request) -> tuple[str, str]:
    """Key a request to its server transaction: ``(branch, method)``, ACK mapped to INVITE.

    RFC 3261 §17.2.3: the ACK for a non-2xx final response has the INVITE's
    branch and matches the INVITE server transaction; a CANCEL has the same
    branch but is a transaction of its own.
    """
    method = "INVITE" if request.method == "ACK" else request.method
    return _branch_of(request), method


def client_key(message: Request | Response) -> tuple[str, str]:
    """Key a request or response to its client transaction: ``(branch, CSeq method)`` (§17.1.3)."""
    return _branch_of(message), message.cseq[1]


class Transaction:
    """Common state of the four transaction machines.

    *send* writes a message to the transport, *timers* schedules on the
    injected clock, *on_terminated* is called once with the transaction when
    it reaches Terminated (the owner then forgets it).
    """

    #: The state a new transaction of this kind starts in (RFC 3261 §17, figures 5-8).
    initial_state: State
    state: State

    def __init__(
        self,
        request: Request,
        *,
        send: Callable[[Request | Response], None],
        timers: Timers,
        on_terminated: Callable[[Transaction], None] | None = None,
        reliable: bool = True,
    ) -> None:
        self.request = request
        self._send = send
        self._timers = timers
        self._on_terminated = on_terminated
        #: False over UDP: retransmission timers run and completion lingers (§17).
        self.reliable = reliable
        self._timer: IDelayedCall | None = None
        #: The retransmission timer (A, E or G), only over an unreliable transport.
        self._retransmit_timer: IDelayedCall | None = None
        self._retransmit_interval = T1
        self.state = self.initial_state
        #: The transaction user (the dialog) for server INVITE transactions.
        self.tu: Any = None

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    def _arm(self, delay: float, function: Callable[[], None]) -> None:
        self._timers.cancel(self._timer)
        self._timer = self._timers.call_later(delay, function)

    def _start_retransmitting(self, message: Request | Response, cap: float | None) -> None:
        """Resend *message* at T1, 2*T1, 4*T1 ... (capped at *cap* when given) until
        :meth:`_stop_retransmitting`; only over an unreliable transport (Timers A, E, G)."""
        if self.reliable:
            return
        self._retransmit_interval = T1
        self._retransmit_timer = self._timers.call_later(
            T1, self._retransmit, message, cap
        )

    def _retransmit(self, message: Request | Response, cap: float | None) -> None:
        self._retransmit_timer = None
        if self.terminated:
            return
        self._send(message)
        interval = self._retransmit_interval * 2
        self._retransmit_interval = interval if cap is None else min(interval, cap)
        self._retransmit_timer = self._timers.call_later(
            self._retransmit_interval, self._retransmit, message, cap
        )

    def _stop_retransmitting(self) -> None:
        self._timers.cancel(self._retransmit_timer)
        self._retransmit_timer = None

    def _linger(self, seconds: float) -> None:
        """Stay in the current (Completed/Confirmed) state *seconds* to absorb
        retransmissions, then terminate; at once over a reliable transport."""
        if self.reliable or seconds <= 0:
            self._terminate()
        else:
            self._arm(seconds, self._terminate)

    def _terminate(self) -> None:
        if self.state is State.TERMINATED:
            return
        self.state = State.TERMINATED
        self._timers.cancel(self._timer)
        self._timer = None
        self._stop_retransmitting()
        if self._on_terminated is not None:
            self._on_terminated(self)

    def terminate(self) -> None:
        """Drop the transaction now, without sending anything (the TU gives up on it).

        The UA core uses it when the flow under a server transaction died, or
        when it could not even answer the request (RFC 3261 §17: the
        transaction then goes straight to Terminated).
        """
        self._terminate()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.state.value} {self.key}>"

    @property
    def key(self) -> tuple[str, str]:
        raise NotImplementedError


class ClientTransaction(Transaction):
    """A client transaction: sends the request and fires ``deferred`` with the final response.

    ``deferred`` fails with :class:`TransactionTimeout` when the timeout timer
    fires, or with the reason given to :meth:`abort` (connection lost).
    *on_provisional* is called with each 1xx response.
    """

    timeout_timer = "F"

    def __init__(
        self,
        request: Request,
        *,
        send: Callable[[Request | Response], None],
        timers: Timers,
        on_terminated: Callable[[Transaction], None] | None = None,
        on_provisional: Callable[[Response], None] | None = None,
        reliable: bool = True,
    ) -> None:
        super().__init__(
            request, send=send, timers=timers, on_terminated=on_terminated, reliable=reliable
        )
        self._on_provisional = on_provisional
        self.deferred: Deferred[Response] = Deferred()
        self.last_response: Response | None = None

    @property
    def key(self) -> tuple[str, str]:
        return client_key(self.request)

    #: The cap of the request's retransmission interval: T2 for Timer E, none for Timer A.
    retransmit_cap: float | None = T2

    def start(self) -> Deferred[Response]:
        """Send the request and arm the timeout timer (64*T1) and, over an unreliable
        transport, the retransmission timer (A or E, RFC 3261 §17.1.1.2, §17.1.2.2)."""
        self._send(self.request)
        self._arm(64 * T1, self._timed_out)
        self._start_retransmitting(self.request, self.retransmit_cap)
        return self.deferred

    def _timed_out(self) -> None:
        self._timer = None
        log.info(
            "{method} timed out (Timer {timer})", method=self.method, timer=self.timeout_timer
        )
        self._finish(Failure(TransactionTimeout(self.method, self.timeout_timer, 64 * T1)))

    def _finish(self, result: Response | Failure) -> None:
        self._terminate()
        self._fire(result)

    def _complete(self, response: Response, linger: float) -> None:
        """A final response: Completed, the Deferred fires, the transaction lingers
        *linger* seconds (Timer D or K; zero over a reliable transport)."""
        self.state = State.COMPLETED
        self._stop_retransmitting()
        self._timers.cancel(self._timer)
        self._timer = None
        self._linger(linger)
        self._fire(response)

    def _fire(self, result: Response | Failure) -> None:
        if not self.deferred.called:
            if isinstance(result, Failure):
                self.deferred.errback(result)
            else:
                self.deferred.callback(result)

    def _provisional(self, response: Response) -> None:
        if self._on_provisional is not None:
            self._on_provisional(response)

    def abort(self, reason: Failure | BaseException) -> None:
        """End the transaction now and fail its Deferred (e.g. the connection was lost)."""
        if self.terminated:
            return
        self._finish(reason if isinstance(reason, Failure) else Failure(reason))

    def response_received(self, response: Response) -> None:
        raise NotImplementedError


class ClientInviteTransaction(ClientTransaction):
    """INVITE client transaction (RFC 3261 §17.1.1).

    Calling --1xx--> Proceeding; 2xx --> Terminated (the TU sends the ACK,
    §13.2.2.4); 300-699 --> the transaction sends the ACK on the INVITE's
    branch (§17.1.1.3) and goes to Completed for Timer D (32 s over UDP, 0
    over a reliable transport), resending that ACK for every retransmission
    of the final response.  Timer B (64*T1) runs only in Calling
    (§17.1.1.2); once a provisional has arrived the transaction waits for the
    final response unless a CANCEL was sent (§9.1: then it gives up after
    another 64*T1).  Over UDP Timer A retransmits the INVITE in Calling at
    T1, 2*T1, 4*T1 ... (no cap, §17.1.1.2).
    """

    timeout_timer = "B"
    initial_state = State.CALLING
    retransmit_cap = None

    def response_received(self, response: Response) -> None:
        if self.terminated:
            return
        if self.state is State.COMPLETED:
            # A retransmitted final response: the ACK again (§17.1.1.2).
            if response.status_code >= 300 and self._ack is not None:
                self._send(self._ack)
            return
        self.last_response = response
        code = response.status_code
        if code < 200:
            self._stop_retransmitting()
            if self.state is State.CALLING:
                self.state = State.PROCEEDING
                self._timers.cancel(self._timer)
                self._timer = None
            self._provisional(response)
        elif code < 300:
            self._finish(response)
        else:
            self._ack = self.build_ack(response)
            self._send(self._ack)
            self._complete(response, TIMER_D)

    _ack: Request | None = None

    def cancel_sent(self) -> None:
        """A CANCEL went out for this INVITE: stop waiting after 64*T1 (RFC 3261 §9.1)."""
        if not self.terminated and self._timer is None:
            self._arm(64 * T1, self._timed_out)

    def build_ack(self, response: Response) -> Request:
        """The ACK for a non-2xx final response (RFC 3261 §17.1.1.3).

        Same Request-URI, Call-ID, From and CSeq number as the INVITE, the To
        of the response (with its tag), the INVITE's top Via only (so the same
        branch) and the INVITE's Route headers.
        """
        invite = self.request
        headers: list[tuple[str, str]] = [("Via", str(invite.via[0]))]
        for route in invite.headers.getlist("Route"):
            headers.append(("Route", route))
        headers += [
            ("Max-Forwards", invite.headers.get("Max-Forwards", "70")),
            ("From", invite.headers["From"]),
            ("To", response.headers["To"]),
            ("Call-ID", invite.headers["Call-ID"]),
            ("CSeq", f"{invite.cseq[0]} ACK"),
        ]
        return Request("ACK", invite.uri, headers)


class ClientNonInviteTransaction(ClientTransaction):
    """Non-INVITE client transaction (RFC 3261 §17.1.2).

    Trying --1xx--> Proceeding --final--> Completed, then Terminated after
    Timer K (T4 over UDP, 0 over a reliable transport), absorbing
    retransmitted final responses.  Timer F (64*T1) runs in Trying and
    Proceeding; over UDP Timer E retransmits the request at T1, 2*T1 ...
    capped at T2, and at T2 once a provisional has arrived (§17.1.2.2).
    """

    timeout_timer = "F"
    initial_state = State.TRYING

    def response_received(self, response: Response) -> None:
        if self.terminated or self.state is State.COMPLETED:
            return
        self.last_response = response
        if response.status_code < 200:
            if self.state is State.TRYING and self._retransmit_timer is not None:
                # §17.1.2.2: in Proceeding the request is resent every T2.
                self._retransmit_interval = T2 / 2
            self.state = State.PROCEEDING
            self._provisional(response)
        else:
            self._complete(response, T4)


class ServerTransaction(Transaction):
    """A server transaction: remembers the last response so retransmissions get it again."""

    def __init__(self, request: Request, **kwargs: Any) -> None:
        super().__init__(request, **kwargs)
        self.last_response: Response | None = None

    @property
    def key(self) -> tuple[str, str]:
        return server_key(self.request)

    @property
    def final_sent(self) -> bool:
        """True once a final (>= 200) response has been sent."""
        return self.last_response is not None and self.last_response.status_code >= 200

    def request_received(self, request: Request) -> None:
        """A retransmission of the request: answer with the last response, if any."""
        if self.last_response is not None and not self.terminated:
            self._send(self.last_response)

    def respond(self, response: Response) -> bool:
        raise NotImplementedError


class ServerInviteTransaction(ServerTransaction):
    """INVITE server transaction (RFC 3261 §17.2.1).

    :meth:`start` sends 100 Trying at once (the RFC allows waiting 200 ms for
    a provisional from the TU; sending it immediately is always correct and
    needs no timer).  Proceeding --2xx--> Terminated (the dialog retransmits
    the 2xx, §13.3.1.4); --300-699--> Completed, Timer H (64*T1) waits for the
    ACK and, over UDP, Timer G resends the response at T1, 2*T1 ... capped at
    T2; the ACK --> Confirmed, where Timer I (T4 over UDP, 0 over a reliable
    transport) absorbs retransmitted ACKs, then Terminated.
    *on_ack_timeout* is called if Timer H fires.
    """

    initial_state = State.PROCEEDING

    def __init__(
        self,
        request: Request,
        *,
        on_ack_timeout: Callable[[ServerInviteTransaction], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(request, **kwargs)
        self._on_ack_timeout = on_ack_timeout

    def start(self) -> None:
        """Send 100 Trying (RFC 3261 §17.2.1); §8.2.6.1: no To tag is added, and the
        request's Timestamp is copied (we answer at once, so no delay is added)."""
        timestamp = self.request.headers.get("Timestamp")
        headers = [("Timestamp", timestamp)] if timestamp is not None else None
        self.respond(Response.from_request(self.request, 100, headers=headers))

    def respond(self, response: Response) -> bool:
        """Send *response* if the state allows it; return whether it was sent."""
        if self.state is not State.PROCEEDING:
            log.debug(
                "dropping {code} for INVITE in state {state}",
                code=response.status_code,
                state=self.state.value,
            )
            return False
        self.last_response = response
        self._send(response)
        code = response.status_code
        if 200 <= code < 300:
            self._terminate()
        elif code >= 300:
            self.state = State.COMPLETED
            self._arm(64 * T1, self._timer_h)
            self._start_retransmitting(response, T2)
        return True

    def request_received(self, request: Request) -> None:
        """A retransmitted INVITE: the last response again, except once Confirmed (§17.2.1)."""
        if self.state is not State.CONFIRMED:
            super().request_received(request)

    def ack_received(self, ack: Request) -> None:
        """The ACK for our non-2xx final response (§17.2.1): Confirmed, then Terminated
        after Timer I (T4 over UDP, absorbing ACK retransmissions; 0 when reliable)."""
        if self.state is State.COMPLETED:
            self.state = State.CONFIRMED
            self._stop_retransmitting()
            self._timers.cancel(self._timer)
            self._timer = None
            self._linger(T4)

    def _timer_h(self) -> None:
        self._timer = None
        log.info("no ACK for INVITE final response (Timer H)")
        self._terminate()
        if self._on_ack_timeout is not None:
            self._on_ack_timeout(self)


class ServerNonInviteTransaction(ServerTransaction):
    """Non-INVITE server transaction (RFC 3261 §17.2.2).

    Trying --1xx--> Proceeding --final--> Completed, then Terminated after
    Timer J (64*T1 over UDP, 0 over a reliable transport).  A retransmitted
    request in Proceeding or Completed gets the last response again.
    """

    initial_state = State.TRYING

    def respond(self, response: Response) -> bool:
        """Send *response* unless a final one was already sent; return whether it was sent."""
        if self.state not in (State.TRYING, State.PROCEEDING):
            return False
        self.last_response = response
        self._send(response)
        if response.status_code < 200:
            self.state = State.PROCEEDING
        else:
            self.state = State.COMPLETED
            self._linger(64 * T1)
        return True


class TransactionTable:
    """Live transactions, keyed by ``(branch, method)`` (RFC 3261 §17.1.3, §17.2.3).

    Client and server transactions live in separate dicts: a response matches
    a client transaction by its top Via branch and CSeq method; a request
    matches a server transaction by its top Via branch and method, with ACK
    mapped to INVITE.  Transactions remove themselves when they terminate
    (pass :meth:`remove` as their *on_terminated*).
    """

    def __init__(self) -> None:
        self._client: dict[tuple[str, str], ClientTransaction] = {}
        self._server: dict[tuple[str, str], ServerTransaction] = {}

    def add(self, transaction: Transaction) -> None:
        """Track *transaction* under its key (a later one with the same key replaces it)."""
        if isinstance(transaction, ClientTransaction):
            self._client[transaction.key] = transaction
        else:
            assert isinstance(transaction, ServerTransaction)
            self._server[transaction.key] = transaction

    def remove(self, transaction: Transaction) -> None:
        """Forget *transaction* (only if it is the one stored under its key)."""
        table: dict[tuple[str, str], Any] = (
            self._client if isinstance(transaction, ClientTransaction) else self._server
        )
        if table.get(transaction.key) is transaction:
            del table[transaction.key]

    def match_response(self, response: Response) -> ClientTransaction | None:
        """The client transaction a response belongs to (§17.1.3), or None."""
        return self._client.get(client_key(response))

    def match_request(self, request: Request) -> ServerTransaction | None:
        """The server transaction a request (or its ACK) belongs to (§17.2.3), or None."""
        return self._server.get(server_key(request))

    def find_server(self, branch: str, method: str) -> ServerTransaction | None:
        """The server transaction with this branch and method (CANCEL matching, §9.2)."""
        return self._server.get((branch, method))

    def client_transactions(self) -> list[ClientTransaction]:
        return list(self._client.values())

    def server_transactions(self) -> list[ServerTransaction]:
        return list(self._server.values())

    def __iter__(self) -> Iterator[Transaction]:
        yield from list(self._client.values())
        yield from list(self._server.values())

    def __len__(self) -> int:
        return len(self._client) + len(self._server)
