"""SIP requests and responses: parse bytes, build messages, serialise (RFC 3261 §7).

``Message.parse`` is built for speed: it splits the header block from the body
with one ``bytes.partition``, decodes it once, unfolds continuation lines only
when there are any, and splits header lines into the
:class:`~voiptwisted.sip.headers.Headers` index in one pass.  It then checks what
every SIP element relies on (start line, by one regex match; Via, From, To,
Call-ID, CSeq, Max-Forwards, Content-Length) and finds the top Via branch and the
From/To tags; other structured values (Contact, Route, Record-Route, lower
Vias...) are parsed on first access and cached in the Headers.  Hot-path string
work prefers ``in``, ``partition`` and ``join`` to ``find``/``count``, whose
calls build an argument tuple.  Every failure, whenever it happens, is a
:class:`SIPParseError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import NoReturn

from voiptwisted.sip.headers import (
    KEY_CACHE,
    MAX_HEADER_LINES,
    MAX_ROUTING_VALUES,
    ROUTING_HEADERS,
    UNSET,
    FoldedLine,
    Headers,
    HeadersInit,
    NameAddr,
    SIPParseError,
    Via,
    canonical_name,
    delta_seconds,
    find_branch,
    find_tag,
    name_addr_tag,
    name_info,
    split_commas,
    via_branch,
)
from voiptwisted.sip.status import SIPMethod, SIPStatus

__all__ = ["Message", "Request", "Response", "SIPParseError"]

SIP_VERSION = "SIP/2.0"
#: (key, display) of the fields a response copies from its request (RFC 3261 §8.2.6.2).
_COPIED = tuple(name_info(name) for name in ("Via", "From", "To", "Call-ID", "CSeq"))

_TOKEN_PAT = r"[A-Za-z0-9\-.!%*_+`'~]+"  # noqa: S105 (a regex, not a secret)
_URI_PAT = r"[A-Za-z][A-Za-z0-9+\-.]*:[^\x00-\x20\x7f<>\"]+"
_TOKEN_RE = re.compile(_TOKEN_PAT)
_URI_RE = re.compile(_URI_PAT)
# A whole Request-Line or Status-Line (RFC 3261 §7.1, §7.2; §25.1: Status-Code is 3DIGIT,
# ASCII digits): groups method, Request-URI or status code, reason phrase.  One match
# accepts a well-formed line; _start_line_error explains any other.
_START_LINE_RE = re.compile(
    rf"({_TOKEN_PAT}) ({_URI_PAT}) SIP/2\.0|SIP/2\.0 ([1-6][0-9][0-9])(?: (.*))?", re.S
)
_SINGLE = frozenset(("call-id", "cseq", "from", "to", "max-forwards", "content-length"))
_REQUIRED = frozenset(("via", "from", "to", "call-id", "cseq"))
_CSEQ_MAX = 2**31  # RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31
_MAX_FORWARDS_MAX = 255  # RFC 3261 §20.22

_KNOWN_METHODS = frozenset(method.value for method in SIPMethod)


_VALIDATED = {
    "via": via_branch,
    "contact": name_addr_tag,
    "route": name_addr_tag,
    "record-route": name_addr_tag,
}
_new = object.__new__


def _digits(value: str) -> bool:
    return value.isascii() and value.isdigit()


class Message:
    """Common part of :class:`Request` and :class:`Response`.

    ``headers`` is a :class:`Headers`; ``body`` the exact body bytes.  Accessors
    (``via``, ``from_``, ``to``, ``cseq``...) parse on first use and cache the
    result in the Headers, which drops it when a field changes; replacing
    ``headers`` brings the new fields' values.
    """

    __slots__ = ("_headers", "body")

    def __init__(self, headers: HeadersInit = None, body: bytes = b"") -> None:
        self._headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = bytes(body)

    # -- parsing ------------------------------------------------------------

    @staticmethod
    def parse(data: bytes, *, strict: bool = False) -> Request | Response:
        """Parse one whole message (a datagram or a frame from the stream framer).

        Checked here: the start line (RFC 3261 §7.1/§7.2, version 2.0 else status
        505), header line syntax, the mandatory headers Via/From/To/Call-ID/CSeq
        present (§8.1.1) and single, CSeq (number < 2**31, method equal to the
        request method, §8.1.1.5), Max-Forwards (0-255), Content-Length.  The
        name-addr / Via grammar is checked lazily, when ``from_``, ``to``, ``via``,
        ``contact``... are first read, or at once with ``strict=True`` (which
        calls :meth:`validate`); ``branch``, ``local_tag`` and ``remote_tag`` are
        found without building those objects.  This keeps the hot path near a bare
        split (see bench/parse.py).

        The body is the ``Content-Length`` octets after the blank line; octets
        beyond it are ignored (RFC 3261 §18.3, RFC 4475 §3.1.1.8).  A
        Content-Length larger than the data is an error (RFC 4475 §3.1.2.2).
        Without Content-Length the body runs to the end of the data (RFC 3261
        §18.3 allows that for datagrams; the stream framer always supplies it).

        Counts are bounded: at most ``MAX_HEADER_LINES`` (256) header lines and
        ``MAX_ROUTING_VALUES`` (64) values each of Via, Route and Record-Route, else
        SIPParseError (status 400).

        Raises :class:`SIPParseError` and nothing else, for any input.
        """
        try:
            message = _parse(data)
            if strict:
                message.validate()
            return message
        except SIPParseError:
            raise
        except Exception as exc:
            raise SIPParseError(f"malformed message ({type(exc).__name__})") from None

    # -- headers ------------------------------------------------------------

    @property
    def headers(self) -> Headers:
        """The header fields.  Accessors below follow later changes to them."""
        return self._headers

    @headers.setter
    def headers(self, value: HeadersInit) -> None:
        self._headers = value if isinstance(value, Headers) else Headers(value)

    def _objects(self) -> dict[str, object]:
        """The cache of parsed header objects, emptied when the headers change."""
        headers = self._headers
        cache = headers._objects
        if cache is None:
            cache = headers._objects = {}
        return cache

    def _one(self, key: str, label: str) -> str:
        value = self._headers._first_value(key)
        if value is None:
            raise SIPParseError(f"missing {label} header")
        return value

    @property
    def call_id(self) -> str:
        """The Call-ID (RFC 3261 §20.8)."""
        value = self._headers._call_id
        if value is UNSET:
            value = self._headers._call_id = self._one("call-id", "Call-ID")
        return value  # type: ignore[return-value]

    @property
    def cseq(self) -> tuple[int, str]:
        """CSeq as ``(number, method)`` (RFC 3261 §20.16)."""
        cseq = self._headers._cseq
        if cseq is UNSET:
            cseq = self._headers._cseq = _parse_cseq(self._one("cseq", "CSeq"))
        return cseq  # type: ignore[return-value]

    @property
    def via(self) -> list[Via]:
        """Every Via value, topmost first (RFC 3261 §20.42)."""
        cache = self._objects()
        cached = cache.get("via")
        if cached is None:
            vias: list[Via] = []
            for line in self._headers._values("via"):
                for part in split_commas(line):
                    if not part:
                        raise SIPParseError("empty Via value")
                    vias.append(Via.parse(part))
            cached = cache["via"] = vias
        return cached  # type: ignore[return-value]

    @property
    def top_via(self) -> Via:
        """The topmost Via (the one our transaction layer matches on)."""
        cache = self._objects()
        cached = cache.get("top_via")
        if cached is None:
            first = self._one("via", "Via")
            if "," in first:
                first = split_commas(first)[0]
            cached = cache["top_via"] = Via.parse(first)
        return cached  # type: ignore[return-value]

    @property
    def branch(self) -> str | None:
        """The branch of the top Via (RFC 3261 §8.1.1.7), None if absent."""
        headers = self._headers
        branch = headers._branch
        if branch is UNSET:
            first = headers._first_value("via")
            if first is not None and "," in first:
                first = split_commas(first)[0]
            branch = headers._branch = None if first is None else via_branch(first)
        return branch  # type: ignore[return-value]

    def _name_addr(self, key: str, label: str) -> NameAddr:
        cache = self._objects()
        cached = cache.get(key)
        if cached is None:
            cached = cache[key] = NameAddr.parse(self._one(key, label))
        return cached  # type: ignore[return-value]

    @property
    def from_(self) -> NameAddr:
        """The From header (RFC 3261 §20.20)."""
        return self._name_addr("from", "From")

    @property
    def to(self) -> NameAddr:
        """The To header (RFC 3261 §20.39)."""
        return self._name_addr("to", "To")

    @property
    def local_tag(self) -> str | None:
        """The From tag: the sender's dialog tag for requests."""
        tag = self._headers._from_tag
        if tag is UNSET:
            tag = self._headers._from_tag = name_addr_tag(self._one("from", "From"))
        return tag  # type: ignore[return-value]

    @property
    def remote_tag(self) -> str | None:
        """The To tag: set by the UAS (RFC 3261 §8.2.6.2)."""
        tag = self._headers._to_tag
        if tag is UNSET:
            tag = self._headers._to_tag = name_addr_tag(self._one("to", "To"))
        return tag  # type: ignore[return-value]

    def _name_addr_list(self, key: str) -> list[NameAddr]:
        cache = self._objects()
        cached = cache.get(key)
        if cached is None:
            out: list[NameAddr] = []
            for line in self._headers._values(key):
                if key == "contact" and line.strip() == "*":
                    continue
                for part in split_commas(line):
                    if not part:
                        raise SIPParseError(f"empty element in {key} header")
                    out.append(NameAddr.parse(part))
            cached = cache[key] = out
        return cached  # type: ignore[return-value]

    @property
    def contact(self) -> list[NameAddr]:
        """Every Contact value (RFC 3261 §20.10); ``Contact: *`` gives []."""
        return self._name_addr_list("contact")

    @property
    def route(self) -> list[NameAddr]:
        """The Route set, in order (RFC 3261 §20.34)."""
        return self._name_addr_list("route")

    @property
    def record_route(self) -> list[NameAddr]:
        """The Record-Route values, in order (RFC 3261 §20.30)."""
        return self._name_addr_list("record-route")

    @property
    def expires(self) -> int | None:
        """The Expires header in seconds (RFC 3261 §20.19), None if absent.

        Values above 2**32-1 are clamped to 2**32-1 (RFC 3261 §10.2.1.1 bound).
        """
        value = self._headers.get("Expires")
        return None if value is None else delta_seconds(value.strip(), "Expires")

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (RFC 3261 §20.22), None if absent."""
        value = self._headers.get("Max-Forwards")
        return None if value is None else _parse_max_forwards(value)

    @property
    def content_type(self) -> str | None:
        """The Content-Type value, or None."""
        return self._headers.get("Content-Type")

    def validate(self) -> None:
        """Check every Via, From, To, Contact, Route, Record-Route and Expires value
        against the RFC 3261 §25 grammar; raise SIPParseError on the first bad one.

        A server should call it (or parse with ``strict=True``) before acting on a
        request, so that a malformed one gets 400 (RFC 4475 §3.1.2).  The checks
        are the same as building the objects (``via``, ``contact``...) would make,
        done with whole-value matches instead.
        """
        name_addr_tag(self._one("from", "From"))
        name_addr_tag(self._one("to", "To"))
        for key, value in self._headers._pairs():
            check = _VALIDATED.get(key)
            if check is None or (key == "contact" and value == "*"):
                continue
            for part in split_commas(value):
                if not part:
                    raise SIPParseError(f"empty element in a {key} header")
                check(part)
        self.expires  # noqa: B018

    # -- serialising --------------------------------------------------------

    def _start_line(self) -> str:
        raise NotImplementedError

    def __bytes__(self) -> bytes:
        """Serialise; Content-Length always states ``len(body)`` (RFC 3261 §20.14)."""
        length = f"Content-Length: {len(self.body)}\r\n"
        parts = [self._start_line(), "\r\n"]
        written = False
        for key, display, value in self._headers._items:
            if key == "content-length":
                if not written:
                    parts.append(length)
                    written = True
                continue
            parts.append(f"{display}: {value}\r\n")
        if not written:
            parts.append(length)
        parts.append("\r\n")
        return "".join(parts).encode("utf-8", "surrogateescape") + self.body


class Request(Message):
    """A SIP request (RFC 3261 §7.1).  ``uri`` is the Request-URI as text."""

    __slots__ = ("method", "uri")

    def __init__(
        self, method: str, uri: str, headers: HeadersInit = None, body: bytes = b""
    ) -> None:
        super().__init__(headers, body)
        method = str(method)
        if not _TOKEN_RE.fullmatch(method):
            raise ValueError(f"invalid method {method!r}")
        uri = str(uri)
        if not _URI_RE.fullmatch(uri):
            raise ValueError("invalid Request-URI")
        self.method = method
        self.uri = uri

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def __repr__(self) -> str:
        return f"<Request {self.method} call_id={self._headers.get('Call-ID')!r}>"


class Response(Message):
    """A SIP response (RFC 3261 §7.2)."""

    __slots__ = ("phrase", "status_code")

    def __init__(
        self,
        status_code: int,
        phrase: str | None = None,
        headers: HeadersInit = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        status_code = int(status_code)
        if not 100 <= status_code <= 699:
            raise ValueError(f"status code out of range: {status_code}")
        if phrase is None:
            phrase = SIPStatus.phrase_for(status_code)
        if "\r" in phrase or "\n" in phrase:
            raise ValueError("reason phrase must not contain CR or LF")
        self.status_code = status_code
        self.phrase = phrase

    @classmethod
    def from_request(
        cls,
        request: Request,
        status_code: int,
        phrase: str | None = None,
        *,
        headers: HeadersInit = None,
        body: bytes = b"",
        to_tag: str | None = None,
    ) -> Response:
        """Build a response to *request* (RFC 3261 §8.2.6.1 and §8.2.6.2).

        Copies every Via in order, From, Call-ID and CSeq, and To; adds
        ``;tag=to_tag`` to To if the request's To had no tag.  Values are copied
        as they are, so a 400 can be built for a request whose From/To/Via
        grammar is broken.  *headers* are
        added after these; a name already copied is replaced, never duplicated.
        """
        via, from_, to, call_id, cseq = _COPIED
        items = [(*via, value) for value in request.headers._values("via")]
        items.append((*from_, request._one("from", "From")))
        to_value = request._one("to", "To")
        if to_tag is not None and find_tag(to_value) is None:
            if "\r" in to_tag or "\n" in to_tag:
                raise ValueError("header values must not contain CR or LF")
            to_value = f"{to_value};tag={to_tag}"
        items.append((*to, to_value))
        items.append((*call_id, request.call_id))
        items.append((*cseq, request._one("cseq", "CSeq")))
        # The copied values come from the request's Headers (checked when they got there).
        out = Headers._of_checked(items)
        if headers is not None:
            extra = headers.items() if isinstance(headers, (Mapping, Headers)) else headers
            seen: set[str] = set()
            for name, value in extra:
                key = name_info(name)[0]
                if key in seen:
                    out.add(name, value)
                else:
                    seen.add(key)
                    out[name] = value
        return cls(status_code, phrase, out, body)

    def _start_line(self) -> str:
        return f"{SIP_VERSION} {self.status_code} {self.phrase}"

    def __repr__(self) -> str:
        return f"<Response {self.status_code} {self.phrase!r}>"


def _parse_cseq(value: str) -> tuple[int, str]:
    parts = value.split()
    if len(parts) != 2:
        raise SIPParseError(f"invalid CSeq {value[:40]!r}")
    number, method = parts
    if not _digits(number) or len(number) > 10 or int(number) >= _CSEQ_MAX:
        raise SIPParseError(f"invalid CSeq number {number[:20]!r}")
    if not _TOKEN_RE.fullmatch(method):
        raise SIPParseError(f"invalid CSeq method {method[:20]!r}")
    return int(number), method


def _parse_max_forwards(value: str) -> int:
    value = value.strip()
    if not _digits(value) or len(value) > 10 or int(value) > _MAX_FORWARDS_MAX:
        raise SIPParseError(f"invalid Max-Forwards {value[:20]!r}")
    return int(value)


def _unfold(head: str) -> bytes:
    """RFC 3261 §7.3.1: replace each CRLF followed by LWS (and LWS before it) by SP.

    A continuation line loses its leading LWS, the line it continues its trailing LWS.
    Done line by line with ``str`` methods, linear in the header block: a regex
    substitution retried each run of SP/HTAB from every position in it, quadratic
    (issue 14 finding 1: 5.5 s of CPU for one 60 KB message).
    """
    lines = head.split("\r\n")
    out: list[str] = []
    previous = lines[0]
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            out.append(previous.rstrip(" \t"))
            out.append(" ")
            previous = line.lstrip(" \t")
        else:
            out.append(previous)
            out.append("\r\n")
            previous = line
    out.append(previous)
    return "".join(out).encode("utf-8", "surrogateescape")


def _check_routing_counts(lines: list[str]) -> None:
    """Raise SIPParseError when Via, Route or Record-Route has more than MAX_ROUTING_VALUES
    values over all its lines (commas outside quotes and ``<...>`` separate values)."""
    found: dict[str, list[str]] = {}
    for line in lines:
        raw, _, value = line.partition(":")
        key = KEY_CACHE.get(raw) or name_info(raw)[0]
        if key in ROUTING_HEADERS:
            found.setdefault(key, []).append(value)
    for key, values in found.items():
        # Counting commas can only over-count (quoted commas); split exactly only then.
        if len(values) + sum(v.count(",") for v in values) <= MAX_ROUTING_VALUES:
            continue
        if sum(len(split_commas(v)) for v in values) > MAX_ROUTING_VALUES:
            raise SIPParseError(
                f"more than {MAX_ROUTING_VALUES} {canonical_name(key)} values"
            )


def _start_line_error(start: str, cseq_method: str) -> NoReturn:
    """Raise the precise error for a start line _START_LINE_RE does not accept; another
    SIP version is status 505 (RFC 3261 §8.2.2)."""
    if start.startswith("SIP/"):
        parts = start.split(" ", 2)
        if parts[0] != SIP_VERSION:
            raise SIPParseError(f"unsupported version {parts[0][:20]!r}", 505)
        code = parts[1] if len(parts) > 1 else ""
        raise SIPParseError(f"invalid status code {code[:20]!r}")
    parts = start.split(" ")
    if len(parts) != 3:
        raise SIPParseError(f"invalid request line {start[:60]!r}")
    method, uri, version = parts
    if version != SIP_VERSION:
        if version.startswith("SIP/"):
            raise SIPParseError(f"unsupported version {version[:20]!r}", 505)
        raise SIPParseError(f"invalid request line {start[:60]!r}")
    if not _TOKEN_RE.fullmatch(method):
        raise SIPParseError(f"invalid method {method[:30]!r}")
    if cseq_method != method:
        raise SIPParseError("CSeq method differs from the request method (RFC 3261 §8.1.1.5)")
    raise SIPParseError(f"invalid Request-URI {uri[:60]!r}")


def _parse(data: bytes) -> Request | Response:
    if type(data) is not bytes:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SIPParseError("message must be bytes")
        data = bytes(data)
    # partition() takes its argument without the tuple-building call path of find(), and
    # gives the body side ready to slice.
    raw_head, blank, rest = data.partition(b"\r\n\r\n")
    if not blank:
        raise SIPParseError("no blank line after the header fields")
    head = raw_head.decode("utf-8", "surrogateescape")
    lines = head.splitlines()
    # Every line break must be CRLF (RFC 3261 §7): the separators splitlines() removed
    # are then exactly two characters each (one join measures them all, cheaper than
    # summing the lengths).  Otherwise look closer: a bare CR or LF is an error, other
    # Unicode line separators are just text.
    if len(head) - len("".join(lines)) != 2 * len(lines) - 2:
        lines = head.split("\r\n")
        if head.count("\n") != len(lines) - 1 or head.count("\r") != len(lines) - 1:
            raise SIPParseError("bare CR or LF in the header block")
    start = lines[0]
    del lines[0]
    if len(lines) > MAX_HEADER_LINES:
        raise SIPParseError(f"more than {MAX_HEADER_LINES} header lines")
    # One pass: each header (lower-case long name, RFC 3261 §7.3) -> its first value,
    # not yet stripped of LWS; a repeated single-valued header is an error (RFC 4475
    # §3.2.9).  A line starting with LWS continues the previous one (RFC 3261
    # §7.3.1): then the header block is unfolded and parsed again.
    index: dict[str, str] = {}
    known = KEY_CACHE
    spread = 0  # an upper bound on Via/Route/Record-Route values beyond each first one
    for line in lines:
        raw, sep, value = line.partition(":")
        if not sep:
            if line[:1] in (" ", "\t"):
                return _parse(_unfold(head) + blank + rest)
            raise SIPParseError(f"header line without ':': {line[:40]!r}")
        try:
            key = known[raw]  # a subscript: cheaper than a .get call on this hot line
        except KeyError:
            try:
                key = name_info(raw)[0]
            except FoldedLine:
                return _parse(_unfold(head) + blank + rest)
        if key in index:
            if key in _SINGLE:
                raise SIPParseError(f"header {key!r} appears more than once")
            if key in ROUTING_HEADERS:
                spread += 1 + value.count(",")
        else:
            index[key] = value
    try:
        via = index["via"]
        from_ = index["from"]
        to = index["to"]
        call_id = index["call-id"]
        cseq = index["cseq"]
    except KeyError:
        missing = sorted(_REQUIRED - index.keys())
        raise SIPParseError(f"missing mandatory headers {missing} (RFC 3261 §8.1.1)") from None
    # Via/Route/Record-Route: at most MAX_ROUTING_VALUES values each.  Together they have at
    # most 3 + spread values (each extra line and each comma may start one), so the exact
    # count runs only when that bound is too high: never for ordinary messages.
    if "," in via:
        spread += via.count(",")
    if "route" in index and "," in index["route"]:
        spread += index["route"].count(",")
    if "record-route" in index and "," in index["record-route"]:
        spread += index["record-route"].count(",")
    if spread > MAX_ROUTING_VALUES - 3:
        _check_routing_counts(lines)

    lengths = index.get("content-length")
    if lengths is None:
        body = rest
    else:
        text = lengths.strip(" \t")
        if not (text.isdigit() and text.isascii()) or len(text) > 10:
            raise SIPParseError(f"invalid Content-Length {text[:20]!r}")
        length = int(text)
        if length > len(rest):
            raise SIPParseError("Content-Length is larger than the message body")
        body = rest[:length]

    try:
        number, cseq_method = cseq.split()
    except ValueError:
        raise SIPParseError("invalid CSeq") from None
    # RFC 3261 §8.1.1.5: the sequence number MUST be less than 2**31.
    if not (number.isdigit() and number.isascii()) or len(number) > 10:
        raise SIPParseError(f"invalid CSeq number {number[:20]!r}")
    cseq_number = int(number)
    if cseq_number >= _CSEQ_MAX:
        raise SIPParseError(f"CSeq number out of range: {number}")

    message: Request | Response
    line = _START_LINE_RE.fullmatch(start)
    if line is None:
        _start_line_error(start, cseq_method)
    method, uri, code, phrase = line.groups()
    if method is not None:
        if cseq_method != method:
            raise SIPParseError("CSeq method differs from the request method (RFC 3261 §8.1.1.5)")
        if "?" in uri and uri[:4].lower() in ("sip:", "sips") and "?" in uri[uri.rfind("@") :]:
            # RFC 3261 §19.1.1 table: headers are not allowed in a Request-URI.
            raise SIPParseError("escaped headers in the Request-URI (RFC 4475 §3.1.2.11)")
        message = _new(Request)
        message.method = method
        message.uri = uri
    else:
        if cseq_method not in _KNOWN_METHODS and not _TOKEN_RE.fullmatch(cseq_method):
            raise SIPParseError(f"invalid CSeq method {cseq_method[:20]!r}")
        message = _new(Response)
        message.status_code = int(code)
        message.phrase = phrase or ""

    call_id = call_id.strip(" \t")
    if not call_id or " " in call_id or "\t" in call_id:
        raise SIPParseError("invalid Call-ID")
    forwards = index.get("max-forwards")
    if forwards is not None:
        text = forwards.strip(" \t")
        # RFC 3261 §20.22: an integer in the range 0-255.
        if not (text.isdigit() and text.isascii()) or (
            len(text) > 2 and (len(text) > 10 or int(text) > 255)
        ):
            raise SIPParseError(f"invalid Max-Forwards {text[:20]!r}")

    headers = message._headers = _new(Headers)
    headers._lines = lines
    headers._first = index
    headers._objects = None
    message.body = body
    headers._call_id = call_id
    headers._cseq = (cseq_number, cseq_method)
    # find_branch and find_tag ignore LWS around a value: no strip needed here.
    if '"' in via or "," in via:
        via = split_commas(via)[0]
    headers._branch = find_branch(via)
    headers._from_tag = find_tag(from_)
    headers._to_tag = find_tag(to) if ";" in to else None
    return message
