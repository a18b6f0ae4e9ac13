"""STUN Binding (RFC 5389): message codec and a small client with a hard timeout.

The message part is pure: build a Binding request, parse a response, read
XOR-MAPPED-ADDRESS (§15.2) or MAPPED-ADDRESS (§15.1) for IPv4 and IPv6, check
FINGERPRINT (§15.5) when present.  :class:`StunClient` runs transactions over
any datagram ``write`` function (typically the call's RTP socket, so the
mapped address is the RTP port's) on an injected clock; :class:`StunProtocol`
wraps it in a ``DatagramProtocol`` for a socket of its own.

Deviation from RFC 5389 §7.2.1 (RTO >= 500 ms, 7 retransmissions): a silent
STUN server must not delay call setup by more than 500 ms, so the defaults
are RTO 100 ms doubling (sends at 0, 100, 300 ms) and a hard 500 ms timeout.
"""

from __future__ import annotations

import binascii
import ipaddress
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

__all__ = [
    "BINDING_ERROR",
    "BINDING_REQUEST",
    "BINDING_SUCCESS",
    "MAGIC_COOKIE",
    "MappedAddress",
    "StunClient",
    "StunError",
    "StunMessage",
    "StunParseError",
    "StunProtocol",
    "StunTimeout",
    "binding_request",
    "is_stun",
]

MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
BINDING_ERROR = 0x0111

ATTR_MAPPED_ADDRESS = 0x0001
ATTR_ERROR_CODE = 0x0009
ATTR_XOR_MAPPED_ADDRESS = 0x0020
ATTR_SOFTWARE = 0x8022
ATTR_FINGERPRINT = 0x8028

_FINGERPRINT_XOR = 0x5354554E
_HEADER = struct.Struct("!HHI12s")
_ATTR = struct.Struct("!HH")
_COOKIE_BYTES = struct.pack("!I", MAGIC_COOKIE)
#: Largest message we accept; STUN over UDP should fit a path MTU (RFC 5389 §7.1).
MAX_MESSAGE_SIZE = 1500


class StunParseError(ValueError):
    """A datagram is not a well-formed STUN message (RFC 5389 §6, §15)."""


class StunError(Exception):
    """A STUN transaction failed: error response (§15.6) or unusable response."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class StunTimeout(StunError):
    """No response within the client's hard timeout."""


class MappedAddress(NamedTuple):
    """A transport address from (XOR-)MAPPED-ADDRESS; same shape as ``NetworkAddress``."""

    host: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int


def is_stun(data: bytes | bytearray | memoryview) -> bool:
    """Cheap demultiplexing test (RFC 5389 §6, RFC 7983): top bits 00 and the magic cookie.

    Lets a socket shared with RTP (first octet 128-191) route STUN elsewhere.
    """
    return len(data) >= 20 and data[0] < 4 and bytes(data[4:8]) == _COOKIE_BYTES


def _fingerprint(data: bytes) -> int:
    return (binascii.crc32(data) & 0xFFFFFFFF) ^ _FINGERPRINT_XOR


@dataclass(slots=True)
class StunMessage:
    """A STUN message: type, 96-bit transaction id, attributes as (type, value) pairs."""

    message_type: int
    transaction_id: bytes
    attributes: list[tuple[int, bytes]] = field(default_factory=list)

    def get(self, attr_type: int) -> bytes | None:
        """The first attribute of *attr_type*, or None."""
        for kind, value in self.attributes:
            if kind == attr_type:
                return value
        return None

    def serialize(self, *, fingerprint: bool = False) -> bytes:
        """Wire form; with *fingerprint*, append FINGERPRINT as the last attribute (§15.5)."""
        if len(self.transaction_id) != 12:
            raise ValueError("STUN transaction id must be 12 octets")
        body = bytearray()
        for kind, value in self.attributes:
            body += _ATTR.pack(kind, len(value)) + value + bytes(-len(value) % 4)
        header = _HEADER.pack(
            self.message_type & 0x3FFF,
            len(body) + (8 if fingerprint else 0),
            MAGIC_COOKIE,
            self.transaction_id,
        )
        data = header + bytes(body)
        if fingerprint:
            data += _ATTR.pack(ATTR_FINGERPRINT, 4) + struct.pack("!I", _fingerprint(data))
        return data

    __bytes__ = serialize

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview) -> StunMessage:
        """Parse and validate (§7.3: leading zero bits, cookie, length; §15.5 FINGERPRINT)."""
        data = bytes(data)
        if len(data) < 20:
            raise StunParseError("STUN message shorter than its 20-byte header")
        if len(data) > MAX_MESSAGE_SIZE:
            raise StunParseError("STUN message too large")
        message_type, length, cookie, transaction_id = _HEADER.unpack_from(data, 0)
        if message_type & 0xC000:
            raise StunParseError("STUN message type must start with two zero bits")
        if cookie != MAGIC_COOKIE:
            raise StunParseError("STUN magic cookie missing (RFC 3489 server?)")
        if length % 4 or 20 + length != len(data):
            raise StunParseError("STUN length does not match the datagram")
        attributes: list[tuple[int, bytes]] = []
        offset = 20
        while offset < len(data):
            if offset + 4 > len(data):
                raise StunParseError("STUN attribute header truncated")
            kind, size = _ATTR.unpack_from(data, offset)
            end = offset + 4 + size
            if end > len(data):
                raise StunParseError("STUN attribute runs past the end of the message")
            value = data[offset + 4 : end]
            if kind == ATTR_FINGERPRINT:
                if size != 4 or end + (-size % 4) != len(data):
                    raise StunParseError("FINGERPRINT must be the last attribute, 4 octets")
                (expected,) = struct.unpack("!I", value)
                if _fingerprint(data[:offset]) != expected:
                    raise StunParseError("STUN FINGERPRINT mismatch")
            attributes.append((kind, value))
            offset = end + (-size % 4)
        return cls(message_type, transaction_id, attributes)

    def _address(self, value: bytes, xor: bool) -> MappedAddress:
        if len(value) < 4:
            raise StunParseError("address attribute truncated")
        family = value[1]
        (port,) = struct.unpack_from("!H", value, 2)
        raw = value[4:]
        if family == 0x01:
            if len(raw) != 4:
                raise StunParseError("IPv4 address attribute must carry 4 octets")
        elif family == 0x02:
            if len(raw) != 16:
                raise StunParseError("IPv6 address attribute must carry 16 octets")
        else:
            raise StunParseError(f"unknown address family {family}")
        if xor:
            port ^= MAGIC_COOKIE >> 16
            key = _COOKIE_BYTES + self.transaction_id
            raw = bytes(a ^ b for a, b in zip(raw, key, strict=False))
        host = ipaddress.IPv4Address(raw) if family == 0x01 else ipaddress.IPv6Address(raw)
        return MappedAddress(host, port)

    @property
    def mapped_address(self) -> MappedAddress | None:
        """XOR-MAPPED-ADDRESS (§15.2) if present, else MAPPED-ADDRESS (§15.1), else None.

        Raises StunParseError when the attribute is malformed.
        """
        value = self.get(ATTR_XOR_MAPPED_ADDRESS)
        if value is not None:
            return self._address(value, xor=True)
        value = self.get(ATTR_MAPPED_ADDRESS)
        if value is not None:
            return self._address(value, xor=False)
        return None

    @property
    def error_code(self) -> tuple[int, str] | None:
        """(code, reason) from ERROR-CODE (§15.6), or None."""
        value = self.get(ATTR_ERROR_CODE)
        if value is None or len(value) < 4:
            return None
        code = (value[2] & 0x07) * 100 + value[3]
        return code, value[4:].decode("utf-8", "replace")


def address_attribute(
    attr_type: int,
    address: tuple[str | ipaddress.IPv4Address | ipaddress.IPv6Address, int],
    transaction_id: bytes,
) -> tuple[int, bytes]:
    """Encode a (XOR-)MAPPED-ADDRESS attribute (what a server sends; used by tests/servers)."""
    host = ipaddress.ip_address(str(address[0]))
    port = address[1]
    raw = host.packed
    family = 0x01 if host.version == 4 else 0x02
    if attr_type == ATTR_XOR_MAPPED_ADDRESS:
        port ^= MAGIC_COOKIE >> 16
        key = _COOKIE_BYTES + transaction_id
        raw = bytes(a ^ b for a, b in zip(raw, key, strict=False))
    return attr_type, struct.pack("!BBH", 0, family, port) + raw


def new_transaction_id() -> bytes:
    """A fresh cryptographically random 96-bit transaction id (RFC 5389 §6)."""
    return os.urandom(12)


def binding_request(transaction_id: bytes | None = None, *, software: str | None = None) -> bytes:
    """A Binding request (§7.1) with FINGERPRINT, optionally SOFTWARE (§15.10)."""
    attributes: list[tuple[int, bytes]] = []
    if software:
        attributes.append((ATTR_SOFTWARE, software.encode("utf-8")[:763]))
    message = StunMessage(BINDING_REQUEST, transaction_id or new_transaction_id(), attributes)
    return message.serialize(fingerprint=True)


def _normalise(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _same_address(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Compare transport addresses, treating ::ffff:a.b.c.d (dual-stack socket) as a.b.c.d."""
    try:
        return (_normalise(a[0]), a[1]) == (_normalise(b[0]), b[1])
    except ValueError:
        return False


class _Transaction:
    __slots__ = ("deferred", "next_at", "request", "retransmit", "rto", "server", "timeout")

    def __init__(self, deferred: defer.Deferred, request: bytes, server: tuple[str, int]):
        self.deferred = deferred
        self.request = request
        self.server = server
        self.retransmit: IDelayedCall | None = None
        self.timeout: IDelayedCall | None = None
        self.rto = 0.0
        self.next_at = 0.0


class StunClient:
    """Runs STUN Binding transactions over a datagram ``write(data, (host, port))`` function.

    Feed every received datagram that :func:`is_stun` accepts to
    :meth:`datagram_received`.  Requests are retransmitted with a doubling
    RTO (RFC 5389 §7.2.1) until ``timeout`` seconds have passed, then the
    Deferred fails with :class:`StunTimeout`.
    """

    log = Logger()

    def __init__(
        self,
        write: Callable[[bytes, tuple[str, int]], object],
        clock: IReactorTime,
        *,
        rto: float = 0.1,
        timeout: float = 0.5,
        max_pending: int = 16,
    ) -> None:
        self.clock = clock
        self.write = write
        self.rto = rto
        self.timeout = timeout
        self.max_pending = max_pending
        self._pending: dict[bytes, _Transaction] = {}

    @property
    def pending(self) -> int:
        """Transactions awaiting a response (each holds two timers at most)."""
        return len(self._pending)

    def request(self, server: tuple[object, int]) -> defer.Deferred[MappedAddress]:
        """Send a Binding request to *server* (an IP literal and port).

        Fires with the :class:`MappedAddress` of the success response; fails
        with :class:`StunError` on an error response and :class:`StunTimeout`
        after ``timeout`` seconds.  Cancelling stops the retransmissions.
        """
        if len(self._pending) >= self.max_pending:
            return defer.fail(StunError("too many STUN transactions pending"))
        try:
            host = ipaddress.ip_address(str(server[0]))
        except ValueError:
            return defer.fail(StunError(f"STUN server must be an IP address, not {server[0]!r}"))
        transaction_id = new_transaction_id()
        address = (str(host), int(server[1]))
        d: defer.Deferred[MappedAddress] = defer.Deferred(lambda _: self._finish(transaction_id))
        txn = _Transaction(d, binding_request(transaction_id), address)
        self._pending[transaction_id] = txn
        txn.rto = self.rto
        txn.next_at = self.clock.seconds()
        txn.timeout = self.clock.callLater(self.timeout, self._timed_out, transaction_id)
        self._send(transaction_id)
        return d

    def _send(self, transaction_id: bytes) -> None:
        txn = self._pending.get(transaction_id)
        if txn is None:
            return
        try:
            self.write(txn.request, txn.server)
        except Exception as exc:
            self.log.warn("STUN request to {server} not sent: {exc}", server=txn.server, exc=exc)
        # Absolute deadlines (start + RTO * (2**k - 1)): a late wake-up does not stretch them.
        txn.next_at += txn.rto
        txn.rto *= 2
        delay = max(0.0, txn.next_at - self.clock.seconds())
        txn.retransmit = self.clock.callLater(delay, self._send, transaction_id)

    def _finish(self, transaction_id: bytes) -> _Transaction | None:
        txn = self._pending.pop(transaction_id, None)
        if txn is not None:
            for call in (txn.retransmit, txn.timeout):
                if call is not None and call.active():
                    call.cancel()
        return txn

    def _timed_out(self, transaction_id: bytes) -> None:
        txn = self._finish(transaction_id)
        if txn is not None:
            txn.deferred.errback(
                StunTimeout(f"no STUN response from {txn.server[0]}:{txn.server[1]}")
            )

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> bool:
        """Handle a datagram; return True if it was a STUN message (consumed).

        Responses whose transaction id matches no pending request, or that
        come from another address than the request went to, are ignored.
        """
        if not is_stun(data):
            return False
        try:
            message = StunMessage.parse(data)
        except StunParseError as exc:
            self.log.debug("bad STUN message from {addr}: {exc}", addr=addr, exc=exc)
            return True
        txn = self._pending.get(message.transaction_id)
        if txn is None or message.message_type not in (BINDING_SUCCESS, BINDING_ERROR):
            return True
        if not _same_address(addr, txn.server):
            return True
        self._finish(message.transaction_id)
        if message.message_type == BINDING_ERROR:
            code, reason = message.error_code or (0, "")
            txn.deferred.errback(StunError(f"STUN error {code} {reason}".strip(), code))
            return True
        try:
            mapped = message.mapped_address
        except StunParseError as exc:
            txn.deferred.errback(StunError(f"bad mapped address: {exc}"))
            return True
        if mapped is None:
            txn.deferred.errback(StunError("STUN success response without a mapped address"))
        else:
            txn.deferred.callback(mapped)
        return True

    def cancel_all(self) -> None:
        """Cancel every pending transaction (their Deferreds fail with CancelledError)."""
        for txn in list(self._pending.values()):
            txn.deferred.cancel()


class StunProtocol(DatagramProtocol):
    """A ``DatagramProtocol`` that owns a :class:`StunClient` on its own socket."""

    noisy = False  # a socket per lookup: no "Starting/Stopping protocol" lines

    def __init__(self, clock: IReactorTime, **client_options: float) -> None:
        self.client = StunClient(self._write, clock, **client_options)  # type: ignore[arg-type]

    def _write(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is None:
            raise StunError("STUN socket is not listening")
        self.transport.write(data, addr)

    def request(self, server: tuple[object, int]) -> defer.Deferred[MappedAddress]:
        """Binding request to *server*; see :meth:`StunClient.request`."""
        return self.client.request(server)

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        self.client.datagram_received(datagram, addr)

    def stopProtocol(self) -> None:
        self.client.cancel_all()
