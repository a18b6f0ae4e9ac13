"""SIP header fields: an ordered case-insensitive multi-map and the structured values.

RFC 3261 §7.3: header names are case-insensitive, may repeat, and a comma-separated
list may be split into several lines (and the other way round) without changing the
meaning.  §7.3.3 defines the compact forms.  §25.1 gives the grammar used here for
parameters (``generic-param``), name-addr / addr-spec and Via.

Everything that fails to parse raises :class:`SIPParseError`; nothing else escapes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import NoReturn, Union

from voiptwisted.sip.uri import NetworkAddress

__all__ = [
    "LIST_HEADERS",
    "MAX_HEADER_LINES",
    "MAX_LIST_VALUES",
    "MAX_NUMBER_DIGITS",
    "MAX_PARAMS",
    "MAX_ROUTING_VALUES",
    "ROUTING_HEADERS",
    "Headers",
    "NameAddr",
    "SIPParseError",
    "Via",
    "canonical_name",
    "parse_params",
    "split_commas",
]


class SIPParseError(ValueError):
    """A SIP message, header or value does not follow RFC 3261 §25 syntax.

    ``status_code`` is the response a server should send for a bad request
    (400 Bad Request, 505 Version Not Supported, 513 Message Too Large).
    """

    def __init__(self, message: str, status_code: int = 400) -> None:
        super().__init__(message)
        self.status_code = status_code


#: RFC 3261 §7.3.3 compact forms plus the ones later RFCs registered.
COMPACT_FORMS: dict[str, str] = {
    "i": "call-id",
    "m": "contact",
    "f": "from",
    "t": "to",
    "v": "via",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
    "o": "event",  # RFC 6665
    "u": "allow-events",  # RFC 6665
    "r": "refer-to",  # RFC 3515
    "b": "referred-by",  # RFC 3892
    "x": "session-expires",  # RFC 4028
    "y": "identity",  # RFC 8224
}

_DISPLAY_NAMES = [
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version", "Organization",
    "P-Asserted-Identity", "P-Preferred-Identity", "Path", "Priority", "Privacy",
    "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
    "Record-Route", "Refer-To", "Referred-By", "Reply-To", "Require", "Retry-After", "Route",
    "RSeq", "Server", "Service-Route", "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject",
    "Subscription-State", "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via",
    "Warning", "WWW-Authenticate",
]  # fmt: skip
_CANONICAL: dict[str, str] = {name.lower(): name for name in _DISPLAY_NAMES}

#: Headers whose values are comma-separated lists (RFC 3261 §7.3.1, §25.1).
#: Most header lines (physical, before unfolding) a parsed message may have.  Bounds the work
#: and memory one message from the network can cost; real messages have a few dozen.
MAX_HEADER_LINES = 256
#: Most values each of Via, Route and Record-Route may carry over all its lines.  A UA walks
#: these lists (responses copy every Via, dialogs keep the Record-Route set as their route
#: set, RFC 3261 §8.2.6.2/§12.1.1); real paths are a handful of hops.
MAX_ROUTING_VALUES = 64
#: The headers :data:`MAX_ROUTING_VALUES` applies to (lower-case long names).
ROUTING_HEADERS = frozenset(("via", "route", "record-route"))
#: Most values one comma-separated header field value may carry (as many as header lines):
#: each costs Python work, so a line of 60,000 commas is refused, not split.
MAX_LIST_VALUES = 256
#: Most parameters one header value may carry, counted by their ``;`` (quoted ones too).
#: Real values have a handful (tag, branch, rport, received, expires, feature tags).
MAX_PARAMS = 64
#: Most digits a number in a header may have.  Every number RFC 3261 defines fits in ten
#: (delta-seconds up to 2**32-1, §25.1); twenty leave room for leading zeros.  Checked
#: before ``int()``, whose 4,300-digit limit raises a plain ValueError (a 500, not a 400).
MAX_NUMBER_DIGITS = 20

LIST_HEADERS = frozenset(
    {
        "via", "route", "record-route", "contact", "allow", "supported", "require",
        "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
        "allow-events", "path", "service-route", "content-encoding", "alert-info",
        "call-info", "error-info", "in-reply-to", "warning",
    }
)  # fmt: skip

# Every pattern that reads network text is linear in it (issue 14 finding 3): each
# quantifier is possessive (``*+``, ``++``, ``?+``: never gives back what it took) and
# runs over a class the next token cannot start with, so no match is ever retried from
# inside a run of LWS, quotes or parameters; searches start at a literal ``;``.  The
# languages are those of the plain quantifiers: the grammar never needs to give back.
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_WS = " \t"
_TOKEN_PAT = r"[A-Za-z0-9\-.!%*_+`'~]++"  # noqa: S105 (a regex, not a secret)
_QUOTED = r'"[^"\\]*+(?:\\.[^"\\]*+)*+"'
_PVALUE = r'[^\x00-\x20\x7f,;<>"\\]++'
# One parameter (RFC 3261 §25.1 generic-param, LWS allowed around ';' and '=').
_PARAM = rf";[ \t]*+({_TOKEN_PAT})(?:[ \t]*+=[ \t]*+({_PVALUE}|{_QUOTED}))?+"
_PARAM_RE = re.compile(_PARAM, re.S)
_PARAMS_RE = re.compile(rf"(?:[ \t]*+{_PARAM})*+[ \t]*+", re.S)
# name-addr: optional display name (quoted or tokens), <URI>, then the parameters.
_TOKENS = rf"{_TOKEN_PAT}(?:[ \t]++{_TOKEN_PAT})*+"
_NAME_ADDR_RE = re.compile(rf"[ \t]*+(?:({_QUOTED})|({_TOKENS}))?+[ \t]*+<([^<>]*+)>(.*)", re.S)
_VIA_HEAD = (
    rf"[ \t]*+(?i:SIP)[ \t]*+/[ \t]*+2\.0[ \t]*+/[ \t]*+({_TOKEN_PAT})[ \t]++"
    r"([A-Za-z0-9_\-.]++|\[[0-9A-Fa-f:.]++\])(?:[ \t]*+:[ \t]*+([0-9]{1,5}))?+"
)
_VIA_RE = re.compile(rf"{_VIA_HEAD}(.*)", re.S)
_URI_CHECK_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*+:[^<>\x00-\x20\x7f]++")
# Whole-value validators used by Message.parse: one C-level match per header, the
# objects themselves are only built when asked for.
_URI_IN_BRACKETS = r"[A-Za-z][A-Za-z0-9+\-.]*+:[^<>\x00-\x20\x7f]++"
_NAME_ADDR_FULL_RE = re.compile(
    rf"[ \t]*+(?:{_QUOTED}|{_TOKENS})?+[ \t]*+<{_URI_IN_BRACKETS}>({_PARAMS_RE.pattern})",
    re.S,
)
_ADDR_SPEC_FULL_RE = re.compile(
    rf"[ \t]*+[A-Za-z][A-Za-z0-9+\-.]*+:[^<>\x00-\x20\x7f\"?,;]++({_PARAMS_RE.pattern})", re.S
)
_VIA_FULL_RE = re.compile(rf"{_VIA_HEAD}({_PARAMS_RE.pattern})", re.S)
_TAG_RE = re.compile(r";[ \t]*+(?i:tag)[ \t]*+=[ \t]*+([^;, \t]++)")
_BRANCH_RE = re.compile(r";[ \t]*+(?i:branch)[ \t]*+=[ \t]*+([^;, \t]++)")
_QUOTED_RE = re.compile(_QUOTED, re.S)
_ELEMENT_RE = re.compile(rf'(?:[^,"<]++|{_QUOTED}|<[^<>]*+>)*+', re.S)
_UNESCAPE_RE = re.compile(r"\\(.)", re.S)

# Cache of raw header name -> (lookup key, display name); bounded so hostile
# input cannot grow it without limit.
_NAME_CACHE: dict[str, tuple[str, str]] = {}
#: Raw header name -> key only, for the parser's hot loop (bounded with _NAME_CACHE).
KEY_CACHE: dict[str, str] = {}
_NAME_CACHE_MAX = 2048


#: Marks a derived value in :class:`Headers` that has not been computed yet.
UNSET: object = object()


class FoldedLine(SIPParseError):
    """A header line starting with LWS: a continuation (RFC 3261 §7.3.1), or an error
    where no header precedes it."""

    def __init__(self) -> None:
        super().__init__("header line starts with whitespace")


def name_info(raw: str) -> tuple[str, str]:
    """Return ``(key, display)`` for a header name: compact forms expanded, canonical case."""
    info = _NAME_CACHE.get(raw)
    if info is not None:
        return info
    if raw[:1] in (" ", "\t"):
        raise FoldedLine
    name = raw.strip(_WS)
    if not _TOKEN_RE.fullmatch(name):
        raise SIPParseError(f"invalid header name {name[:40]!r}")
    key = name.lower()
    key = COMPACT_FORMS.get(key, key)
    info = (key, _CANONICAL.get(key, name if len(name) > 1 else key))
    if len(_NAME_CACHE) < _NAME_CACHE_MAX:
        _NAME_CACHE[raw] = info
        KEY_CACHE[raw] = key
    return info


def canonical_name(name: str) -> str:
    """Return the display form of a header name (``"i"`` -> ``"Call-ID"``)."""
    return name_info(name)[1]


def split_commas(value: str) -> list[str]:
    """Split a header value at commas that are outside quoted strings and ``<...>``.

    RFC 3261 §7.3.1: a comma-separated list header may be written as one line.
    Elements are stripped; empty elements are kept so callers can reject them.  More
    than :data:`MAX_LIST_VALUES` elements is a SIPParseError.
    """
    if "," not in value:
        return [value.strip(_WS)]
    if '"' not in value and "<" not in value:
        if value.count(",") >= MAX_LIST_VALUES:
            _too_many_values(value)
        return [part.strip(_WS) for part in value.split(",")]
    parts: list[str] = []
    pos = 0
    n = len(value)
    match = _ELEMENT_RE.match
    while True:
        end = match(value, pos).end()  # type: ignore[union-attr]
        parts.append(value[pos:end].strip(_WS))
        if end == n:
            return parts
        if value[end] != ",":
            raise SIPParseError(f"unbalanced quote or '<' in {value.strip(_WS)[:60]!r}")
        if len(parts) == MAX_LIST_VALUES:
            _too_many_values(value)
        pos = end + 1


def _too_many_values(value: str) -> NoReturn:
    raise SIPParseError(f"more than {MAX_LIST_VALUES} values in {value.strip(_WS)[:40]!r}...")


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ``;name=value;flag`` (RFC 3261 §25.1 ``generic-param``) into a dict.

    Names are lower-cased (RFC 3261 §7.3.1: parameter names are case-insensitive);
    values are kept as written, a quoted-string value keeps its quotes.  LWS around
    ``;`` and ``=`` is allowed.  A flag without value maps to ``None``.  More than
    :data:`MAX_PARAMS` parameters is a SIPParseError.
    """
    if text.count(";") > MAX_PARAMS:
        raise SIPParseError(f"more than {MAX_PARAMS} parameters in {text[:40]!r}...")
    if not _PARAMS_RE.fullmatch(text):
        raise SIPParseError(f"invalid parameters {text[:60]!r}")
    return {
        name.lower(): value or None for name, value in _PARAM_RE.findall(text)
    }


def name_addr_tag(value: str) -> str | None:
    """Validate a From/To value and return its tag, without building a NameAddr.

    Same acceptance as :meth:`NameAddr.parse` (RFC 3261 §25.1 name-addr / addr-spec);
    this is the fast path ``Message.parse`` uses.
    """
    m = _NAME_ADDR_FULL_RE.fullmatch(value) or _ADDR_SPEC_FULL_RE.fullmatch(value)
    if m is None:
        NameAddr.parse(value)  # raises with a precise message
        raise SIPParseError(f"invalid name-addr {value[:60]!r}")
    params = m.group(1)
    if not params:
        return None
    if params.count(";") > MAX_PARAMS:
        NameAddr.parse(value)  # raises: too many parameters
    tag = _TAG_RE.search(params)
    return tag.group(1) if tag else None


def via_branch(value: str) -> str | None:
    """Validate one Via value and return its branch, without building a Via."""
    m = _VIA_FULL_RE.fullmatch(value)
    if (
        m is None
        or (m.group(3) and int(m.group(3)) > 65535)
        or "rport=" in m.group(4)
        or m.group(4).count(";") > MAX_PARAMS
    ):
        return Via.parse(value).branch  # the full check, raising with a precise message
    params = m.group(4)
    if not params:
        return None
    branch = _BRANCH_RE.search(params)
    return branch.group(1) if branch else None


def find_tag(value: str) -> str | None:
    """Return the ``tag`` header parameter of a From/To value without validating it.

    The lazy counterpart of :func:`name_addr_tag`: it only looks past the display
    name and the ``<URI>``, so a ``;tag=`` inside the URI is not taken.  LWS around
    the value does not change the result, so the parser need not strip it first.

    The common shapes (``[name] <uri>;...`` and ``"name" <uri>;...``) are read with
    partition(), whose one argument is passed without the argument tuple find()
    builds; :func:`_find_tag_anywhere` handles the rest with the same result.
    """
    tail = value
    if '"' in value:
        # A quoted display name before the "<" (RFC 3261 §25.1): look past its end.
        before, _, quoted = value.partition('"')
        if "<" in before or "\\" in quoted:
            return _find_tag_anywhere(value)
        _, closed, tail = quoted.partition('"')
        if not closed:
            return _find_tag_anywhere(value)
    _, gt, params = tail.partition(">")
    if gt:
        _, sep, after = params.partition(";tag=")
        if not sep:
            if "=" not in params:
                return None
        elif (found := after.partition(";")[0]).isalnum():
            return found
    return _find_tag_anywhere(value)


def _plain_value(found: str, *, last: bool) -> str | None:
    """*found* as a parameter value the fast readers may return, or None to look closer:
    LWS trimmed where it ran to the end of the header value (*last*), and then no space,
    comma or tab left inside."""
    if last:
        found = found.rstrip(_WS)
    if found and " " not in found and "," not in found and "\t" not in found:
        return found
    return None


def _find_tag_anywhere(value: str) -> str | None:
    """:func:`find_tag` for any value: escaped quotes, addr-spec form, unusual spelling."""
    start = 0
    if '"' in value:
        quote = value.find('"')
        lt = value.find("<")
        if lt < 0 or quote < lt:
            if "\\" in value:
                m = _QUOTED_RE.match(value, quote)
                start = m.end() if m else quote + 1
            else:
                start = value.find('"', quote + 1) + 1 or quote + 1
    start = value.find(">", start) + 1 or start
    i = value.find(";tag=", start)
    if i >= 0:
        k = value.find(";", i + 5)
        found = value[i + 5 : k] if k >= 0 else value[i + 5 :]
        if found.isalnum():
            return found
        plain = _plain_value(found, last=k < 0)
        if plain is not None:
            return plain
    elif value.find("=", start) < 0:
        return None
    m = _TAG_RE.search(value, start)
    return m.group(1) if m else None


def find_branch(value: str) -> str | None:
    """Return the ``branch`` parameter of one Via value without validating it.

    LWS around the value does not change the result, as for :func:`find_tag`.
    """
    _, sep, after = value.partition(";branch=")  # cheaper to call than find()
    if sep:
        found, semi, _ = after.partition(";")
        if found.isalnum():
            return found
        plain = _plain_value(found, last=not semi)
        if plain is not None:
            return plain
    elif "=" not in value:
        return None
    m = _BRANCH_RE.search(value)
    return m.group(1) if m else None


def format_params(params: Mapping[str, str | None]) -> str:
    """Serialise a parameter dict back to ``;name=value;flag``."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def delta_seconds(value: str, what: str) -> int:
    """An RFC 3261 §25.1 ``delta-seconds`` (Expires header or parameter) as an int.

    Values above 2**32-1 count as 2**32-1 (RFC 3261 §10.2.1.1, §20.19); anything but
    1 to :data:`MAX_NUMBER_DIGITS` ASCII digits is a SIPParseError.
    """
    if not (value.isascii() and value.isdigit()) or len(value) > MAX_NUMBER_DIGITS:
        raise SIPParseError(f"invalid {what} {value[:20]!r}")
    return min(int(value), 2**32 - 1)


def _unquote(quoted: str) -> str:
    """The text of a quoted-string (RFC 3261 §25.1), quoted-pairs resolved."""
    inner = quoted[1:-1]
    return _UNESCAPE_RE.sub(r"\1", inner) if "\\" in inner else inner


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_uri(uri: str) -> None:
    """A URI in a header: scheme ":" and no LWS, controls or angle brackets (RFC 3986)."""
    if not _URI_CHECK_RE.fullmatch(uri):
        raise SIPParseError(f"invalid URI {uri[:60]!r}")


class NameAddr:
    """A ``name-addr`` or ``addr-spec`` with header parameters (RFC 3261 §20.10, §25.1).

    Used by From, To, Contact, Route, Record-Route, Refer-To...  ``uri`` is kept as
    the string between ``<`` and ``>`` (not parsed: any scheme is allowed, RFC 4475
    §3.2.5); ``params`` are the header parameters (``tag``, ``expires``, ``q``...).
    """

    __slots__ = ("display_name", "params", "uri")

    def __init__(
        self,
        uri: str,
        display_name: str | None = None,
        params: Mapping[str, str | None] | None = None,
    ) -> None:
        self.uri = str(uri)
        self.display_name = display_name
        self.params: dict[str, str | None] = dict(params) if params else {}

    @classmethod
    def parse(cls, value: str) -> NameAddr:
        """Parse one header value; raise :class:`SIPParseError` if it is malformed.

        RFC 3261 §20.10: an addr-spec whose URI contains ``,``, ``?`` or ``;`` must be
        written in name-addr form; parameters after a bare addr-spec are header
        parameters.  A display name is either a quoted string or tokens separated
        by LWS (RFC 4475 §3.1.2.15).
        """
        m = _NAME_ADDR_RE.fullmatch(value)
        if m is not None:
            quoted, tokens, uri, tail = m.groups()
            _check_uri(uri)
            display = _unquote(quoted) if quoted is not None else tokens
            if display is not None and tokens is not None and (" " in display or "\t" in display):
                display = " ".join(display.split())
            return cls(uri, display, parse_params(tail) if tail else None)
        v = value.strip(_WS)
        if '"' in v or "<" in v or ">" in v:
            raise SIPParseError(f"invalid name-addr {v[:60]!r}")
        semi = v.find(";")
        uri = v if semi < 0 else v[:semi].rstrip(_WS)
        _check_uri(uri)
        if "?" in uri or "," in uri:
            raise SIPParseError(f"URI with headers must be in <...>: {uri[:60]!r}")
        return cls(uri, None, parse_params(v[semi:]) if semi >= 0 else None)

    @property
    def tag(self) -> str | None:
        """The ``tag`` parameter (RFC 3261 §19.3), or None."""
        return self.params.get("tag")

    @property
    def expires(self) -> int | None:
        """The Contact ``expires`` parameter as seconds (RFC 3261 §20.10), or None.

        RFC 3261 §10.2.4 / §20.19: values above 2**32-1 are treated as 2**32-1.
        """
        value = self.params.get("expires")
        return None if value is None else delta_seconds(value, "expires parameter")

    def __str__(self) -> str:
        head = f"<{self.uri}>" if self.display_name is None else (
            f"{_quote(self.display_name)} <{self.uri}>"
        )
        return head + format_params(self.params)

    def __repr__(self) -> str:
        return f"NameAddr({self.uri!r}, {self.display_name!r}, {self.params!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NameAddr):
            return NotImplemented
        return (self.uri, self.display_name, self.params) == (
            other.uri,
            other.display_name,
            other.params,
        )

    __hash__ = None  # type: ignore[assignment]


class Via:
    """One Via header value (RFC 3261 §20.42, §25.1 ``via-parm``).

    ``protocol`` is ``"SIP/2.0/TLS"`` (normalised, transport upper-cased); ``host`` and
    ``port`` are the sent-by; ``params`` carries ``branch``, ``received``, ``rport``...
    """

    __slots__ = ("host", "params", "port", "protocol")

    def __init__(
        self,
        protocol: str,
        host: str,
        port: int | None = None,
        params: Mapping[str, str | None] | None = None,
    ) -> None:
        self.protocol = protocol
        self.host = host
        self.port = port
        self.params: dict[str, str | None] = dict(params) if params else {}

    @classmethod
    def parse(cls, value: str) -> Via:
        """Parse one Via value; LWS may surround ``/``, ``;`` and ``=`` (RFC 4475 §3.1.1.1)."""
        m = _VIA_RE.fullmatch(value)
        if m is None:
            head = value.split(";", 1)[0].replace(" ", "").replace("\t", "")
            if head.upper().startswith("SIP/") and not head.startswith("SIP/2.0/", 0):
                raise SIPParseError(f"unsupported Via protocol {head[:40]!r}", 505)
            raise SIPParseError(f"invalid Via {value[:60]!r}")
        transport, host, port_text, tail = m.groups()
        port = None
        if port_text is not None:
            port = int(port_text)
            if port > 65535:
                raise SIPParseError(f"port out of range: {port}")
        params = parse_params(tail) if tail else {}
        rport = params.get("rport")
        if rport is not None and not (
            rport.isascii() and rport.isdigit() and len(rport) <= 5 and int(rport) < 65536
        ):
            raise SIPParseError(f"invalid rport {rport[:20]!r}")
        return cls(f"SIP/2.0/{transport.upper()}", host, port, params)

    @property
    def transport(self) -> str:
        """The transport token: ``"UDP"``, ``"TCP"``, ``"TLS"``..."""
        return self.protocol.rsplit("/", 1)[-1]

    @property
    def branch(self) -> str | None:
        """The transaction id (RFC 3261 §8.1.1.7), or None for RFC 2543 peers."""
        return self.params.get("branch")

    @property
    def received(self) -> str | None:
        """The ``received`` address the next hop saw (RFC 3261 §18.2.1)."""
        return self.params.get("received")

    @property
    def rport(self) -> int | bool | None:
        """RFC 3581: the port the next hop saw (int), True if requested, None if absent."""
        if "rport" not in self.params:
            return None
        value = self.params["rport"]
        return True if value is None else int(value)

    def public_address(
        self, current: NetworkAddress | None = None, default_port: int = 5060
    ) -> NetworkAddress | None:
        """Our address as the next hop saw it, from ``received`` and ``rport`` (RFC 3581 §4).

        A part the hop did not report comes from *current* (the address
        learned before), else from our sent-by, else *default_port*.  None when
        the Via reports neither part or the result is not an address.
        """
        received, rport = self.received, self.rport
        if rport is True:
            rport = None
        if received is None and rport is None:
            return None
        host = received or (str(current.host) if current is not None else self.host)
        port = rport or self.port or (current.port if current is not None else default_port)
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        try:
            return NetworkAddress.parse(f"{host}:{port}")
        except ValueError:
            return None

    def __str__(self) -> str:
        host = self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        sent_by = host if self.port is None else f"{host}:{self.port}"
        return f"{self.protocol} {sent_by}{format_params(self.params)}"

    def __repr__(self) -> str:
        return f"Via({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Via):
            return NotImplemented
        return (self.protocol, self.host, self.port, self.params) == (
            other.protocol,
            other.host,
            other.port,
            other.params,
        )

    __hash__ = None  # type: ignore[assignment]


HeadersInit = Union["Headers", Mapping[str, str], Iterable[tuple[str, str]], None]


class Headers:
    """Ordered, case-insensitive multi-map of SIP header fields (RFC 3261 §7.3).

    Names are stored in canonical form (compact forms expanded, RFC 3261 §7.3.3);
    values are ``str``.  ``h[name]`` is the first value; ``getlist`` returns all
    values, splitting the comma-separated list headers (:data:`LIST_HEADERS`).

    A parsed message's headers start in a light state set up by ``Message.parse``
    (``_lines``: the raw header lines; ``_first``: the first, unstripped value of
    each name); the ordered item list and the full index are built the first time
    something needs them.

    The values :class:`~voiptwisted.sip.message.Message` derives from the fields
    (Call-ID, CSeq, top Via branch, From and To tags, parsed header objects) are
    cached here, next to the fields they come from: every change drops them
    (:meth:`_changed`), and messages sharing one Headers share them.  Reading a
    cached value is then a single attribute load.  ``UNSET`` marks a value not
    derived yet (None is a valid branch or tag).
    """

    __slots__ = (
        "_branch", "_call_id", "_cseq", "_first", "_from_tag", "_index_map", "_item_list",
        "_lines", "_objects", "_to_tag",
    )  # fmt: skip

    def __init__(self, init: HeadersInit = None) -> None:
        self._changed()
        self._lines: list[str] | None = None
        self._first: dict[str, str] | None = None
        self._item_list: list[tuple[str, str, str]] = []
        self._index_map: dict[str, list[str]] = {}
        if init is None:
            return
        if isinstance(init, Headers):
            self._item_list = list(init._items)
            self._index_map = {k: list(v) for k, v in init._index.items()}
            return
        pairs = init.items() if isinstance(init, Mapping) else init
        for name, value in pairs:
            self.add(name, value)

    @classmethod
    def _of_checked(cls, items: list[tuple[str, str, str]]) -> Headers:
        """Headers holding *items* ``(key, display, value)`` as they are, in order.

        For values taken from another Headers (already checked: no CR/LF) under names
        already resolved with :func:`name_info`: building a response copies five or
        more fields per message, and :meth:`add` re-checked each one (issue 16).
        """
        headers = cls()
        index = headers._index_map
        for key, _, value in items:
            index.setdefault(key, []).append(value)
        headers._item_list = items
        return headers

    def _changed(self) -> None:
        """Drop every derived value: the fields they came from changed."""
        self._call_id = self._cseq = self._branch = self._from_tag = self._to_tag = UNSET
        self._objects: dict[str, object] | None = None

    def _materialize(self) -> None:
        lines = self._lines
        if lines is None:
            return
        items = []
        index: dict[str, list[str]] = {}
        for line in lines:
            raw, _, value = line.partition(":")
            key, display = name_info(raw)
            value = value.strip(_WS)
            items.append((key, display, value))
            index.setdefault(key, []).append(value)
        self._item_list = items
        self._index_map = index
        self._lines = None
        self._first = None

    def _pairs(self) -> Iterator[tuple[str, str]]:
        """(key, value) for every header line in order, without building the index."""
        lines = self._lines
        if lines is None:
            for key, _, value in self._item_list:
                yield key, value
            return
        cached = KEY_CACHE.get
        for line in lines:
            raw, _, value = line.partition(":")
            yield cached(raw) or name_info(raw)[0], value.strip(_WS)

    @property
    def _items(self) -> list[tuple[str, str, str]]:
        if self._lines is not None:
            self._materialize()
        return self._item_list

    @_items.setter
    def _items(self, items: list[tuple[str, str, str]]) -> None:
        self._item_list = items

    @property
    def _index(self) -> dict[str, list[str]]:
        if self._lines is not None:
            self._materialize()
        return self._index_map

    def _first_value(self, key: str) -> str | None:
        first = self._first
        if first is not None:
            value = first.get(key)
            return None if value is None else value.strip(_WS)
        values = self._index_map.get(key)
        return values[0] if values else None

    def _values(self, key: str) -> list[str]:
        first = self._first
        if first is not None and key not in first:
            # Absent from a parsed message (``_first`` names every header it has): no need
            # to build the full index to say so (Require, Content-Encoding... per request).
            return []
        return self._index.get(key, [])

    def __getitem__(self, name: str) -> str:
        value = self._first_value(name_info(name)[0])
        if value is None:
            raise KeyError(name)
        return value

    def get(self, name: str, default: str | None = None) -> str | None:
        """Return the first value of *name*, or *default*."""
        value = self._first_value(name_info(name)[0])
        return default if value is None else value

    def getlist(self, name: str) -> list[str]:
        """Return every value of *name* in order; list headers are split at commas.

        Empty list elements are dropped.
        """
        key = name_info(name)[0]
        values = self._values(key)
        if key not in LIST_HEADERS:
            return list(values)
        out: list[str] = []
        for value in values:
            out.extend(part for part in split_commas(value) if part)
        return out

    def __setitem__(self, name: str, value: str) -> None:
        key, display = name_info(name)
        value = _check_value(value)
        self._changed()
        index = self._index
        if key not in index:
            self._item_list.append((key, display, value))
        else:
            first = True
            items = []
            for item in self._item_list:
                if item[0] == key:
                    if not first:
                        continue
                    first = False
                    item = (key, display, value)
                items.append(item)
            self._item_list = items
        index[key] = [value]

    def add(self, name: str, value: str) -> None:
        """Append a value (a new header line) after the existing ones."""
        key, display = name_info(name)
        value = _check_value(value)
        self._changed()
        index = self._index
        self._item_list.append((key, display, value))
        index.setdefault(key, []).append(value)

    def setdefault(self, name: str, value: str) -> str:
        """Set *name* to *value* unless present; return the (first) value."""
        current = self.get(name)
        if current is None:
            self[name] = value
            return value
        return current

    def __delitem__(self, name: str) -> None:
        key = name_info(name)[0]
        self._changed()
        index = self._index
        if key not in index:
            raise KeyError(name)
        del index[key]
        self._item_list = [item for item in self._item_list if item[0] != key]

    def pop(self, name: str, default: str | None = None) -> str | None:
        """Remove every value of *name*; return the first one or *default*."""
        value = self.get(name)
        if value is None:
            return default
        del self[name]
        return value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        try:
            return self._first_value(name_info(name)[0]) is not None
        except SIPParseError:
            return False

    def items(self) -> list[tuple[str, str]]:
        """Every (canonical name, value) pair in message order."""
        return [(display, value) for _, display, value in self._items]

    def keys(self) -> list[str]:
        """Distinct canonical names in order of first appearance."""
        seen: dict[str, str] = {}
        for key, display, _ in self._items:
            seen.setdefault(key, display)
        return list(seen.values())

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Headers):
            return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def copy(self) -> Headers:
        """A shallow copy."""
        return Headers(self)

    def __repr__(self) -> str:
        return f"Headers({self.items()!r})"


def _check_value(value: object) -> str:
    """Header values must be text without CR/LF (header injection)."""
    text = str(value)
    if "\r" in text or "\n" in text:
        raise ValueError("header values must not contain CR or LF")
    return text
