"""Split a SIP byte stream (TCP/TLS) into whole messages and keepalives.

RFC 3261 §18.3: on a stream the header block ends at the first blank line and
the body is exactly ``Content-Length`` octets.  Content-Length is mandatory on
streams; a message without one is taken to have an empty body (that is the only
reading that keeps the stream in sync, and what common proxies do).  RFC 5626
§4.4.1: a ``CRLFCRLF`` before a message is a keepalive ping, a lone ``CRLF`` is a
pong; RFC 3261 §7.5: CRLFs before a start line are otherwise ignored.

The framer is pure (no I/O) and bounded: a header block above
``max_header_size`` or a Content-Length above ``max_body_size`` raises
:class:`FramingError` with ``status_code`` 513 as soon as it is seen, without
buffering the rest, so the protocol can answer 513 and close.
"""

from __future__ import annotations

from voiptwisted.sip.headers import SIPParseError

__all__ = ["PING", "PONG", "FramingError", "StreamFramer"]

#: RFC 5626 §4.4.1 / §3.5.1 keep-alive ping (double CRLF) and its pong (single CRLF).
PING = b"\r\n\r\n"
PONG = b"\r\n"


class FramingError(SIPParseError):
    """The stream cannot be framed: 513 (too large) or 400 (bad Content-Length).

    After this the stream is out of sync; the connection should be closed.
    """


class StreamFramer:
    """Incremental framer: ``feed(chunk)`` returns the complete items found so far.

    Items are whole messages (``bytes``) and the keepalives :data:`PING` and
    :data:`PONG`.  With ``eager_pong`` (the default, for the UA side that sends
    pings) a CRLF that ends the buffered data is reported as a PONG at once; a
    server-side framer passes ``eager_pong=False`` so that a ping split after its
    first CRLF still comes out as one PING.
    """

    def __init__(
        self,
        max_header_size: int = 65536,
        max_body_size: int = 1 << 20,
        *,
        eager_pong: bool = True,
    ) -> None:
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self.eager_pong = eager_pong
        self._buffer = bytearray()
        self._scan = 0  # where to resume looking for the end of the header block
        self._need: int | None = None  # total frame length once the header is parsed
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Octets held waiting for the rest of a message."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add *data* and return every complete message / keepalive in order."""
        if self._error is not None:
            raise self._error
        buf = self._buffer
        buf += data
        out: list[bytes] = []
        try:
            while buf:
                if self._need is None:
                    if buf[0] in b"\r\n":
                        if not self._keepalive(buf, out):
                            break
                        continue
                    end = buf.find(b"\r\n\r\n", self._scan)
                    if end < 0:
                        if len(buf) > self.max_header_size:
                            raise FramingError("header block too large", 513)
                        self._scan = max(0, len(buf) - 3)
                        break
                    if end + 4 > self.max_header_size:
                        raise FramingError("header block too large", 513)
                    length = _content_length(bytes(buf[:end]))
                    if length > self.max_body_size:
                        raise FramingError(f"body of {length} octets is too large", 513)
                    self._need = end + 4 + length
                    self._scan = 0
                if len(buf) < self._need:
                    break
                out.append(bytes(buf[: self._need]))
                del buf[: self._need]
                self._need = None
        except FramingError as exc:
            self._error = exc
            self._buffer = bytearray()
            raise
        return out

    def _keepalive(self, buf: bytearray, out: list[bytes]) -> bool:
        """Consume a leading PING/PONG; False if more bytes are needed to decide."""
        if buf.startswith(PING):
            out.append(PING)
            del buf[:4]
            return True
        if buf.startswith(PONG):
            if len(buf) == 2 and not self.eager_pong:
                return False
            if len(buf) == 3 and buf[2:3] == b"\r":
                return False
            out.append(PONG)
            del buf[:2]
            return True
        if buf[0:1] == b"\r" and len(buf) == 1:
            return False
        raise FramingError("stray CR or LF before a start line")


def _content_length(head: bytes) -> int:
    """Find Content-Length (or ``l``) in a raw header block; 0 if absent."""
    lower = head.lower()
    if lower.count(b"\r\ncontent-length") == 1 and b"\r\nl" not in lower:
        # The usual block: one Content-Length line, no compact form, no folding.  Read it
        # where it is instead of decoding and splitting every line (issue 16); anything
        # else (or any doubt) takes the general path below, which gives the same answer.
        start = lower.index(b"\r\ncontent-length") + 16
        end = head.find(b"\r\n", start)
        before, sep, value = head[start : len(head) if end < 0 else end].partition(b":")
        value = value.strip(b" \t")
        if (
            sep and not before.strip(b" \t") and value.isdigit() and len(value) <= 20
            and b"\r\n " not in head and b"\r\n\t" not in head
        ):
            return int(value)
    text = head.decode("latin-1")
    if "\r\n " in text or "\r\n\t" in text:
        text = text.replace("\r\n ", " ").replace("\r\n\t", " ")
    found: int | None = None
    for line in text.split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            continue
        name = name.strip(" \t").lower()
        if name != "content-length" and name != "l":
            continue
        value = value.strip(" \t")
        if not (value.isascii() and value.isdigit()):
            raise FramingError(f"invalid Content-Length {value[:20]!r}", 400)
        length = int(value) if len(value) <= 20 else 1 << 64
        if found is not None and found != length:
            raise FramingError("conflicting Content-Length headers", 400)
        found = length
    return found or 0
