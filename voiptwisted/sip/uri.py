"""SIP and SIPS URIs (RFC 3261 §19.1), network addresses and caller IDs.

`SipURI` is a ``str`` holding the canonical URI so it can be dropped into a
header unchanged, with the parsed parts as attributes.  Parsing is strict
(RFC 3261 §25.1 grammar, RFC 2732 IPv6 references) and raises only
`InvalidURI`, whose message never contains a password.

Security deviation from the reference API: the password of
``sip:user:password@host`` is kept only in ``SipURI.password``; it is not
part of the string value, ``repr()`` or any exception text.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import urllib.parse
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

__all__ = ["CallerID", "InvalidURI", "NetworkAddress", "SipURI"]

Host = ipaddress.IPv4Address | ipaddress.IPv6Address | str

#: Longest URI accepted; anything longer is rejected before any work is done.
MAX_URI_LENGTH = 8192

_DEFAULT_PORTS = {"sip": 5060, "sips": 5061}

# RFC 3261 §25.1 character sets; "%" stands for an escape, checked by _BAD_ESCAPE_RE
# (single character classes keep the regex engine in its fast loops).
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()%"
_USER = rf"[{_UNRESERVED}&=+$,;?/]+"
_PASSWORD = rf"[{_UNRESERVED}&=+$,]*"
_PCHAR = rf"[{_UNRESERVED}\[\]/:&+$]"
_HCHAR = rf"[{_UNRESERVED}\[\]/?:+$]"
_BAD_ESCAPE_RE = re.compile(r"%(?![0-9A-Fa-f]{2})")

_URI_RE = re.compile(
    r"(?P<scheme>[Ss][Ii][Pp][Ss]?):"
    rf"(?:(?P<user>{_USER})(?::(?P<password>{_PASSWORD}))?@)?"
    r"(?P<host>\[[^\]]*\]|[A-Za-z0-9.\-]+)"
    r"(?::(?P<port>[0-9]{1,5}))?"
    rf"(?P<params>(?:;{_PCHAR}+(?:={_PCHAR}+)?)*)"
    rf"(?:\?(?P<headers>{_HCHAR}+={_HCHAR}*(?:&{_HCHAR}+={_HCHAR}*)*))?"
)
# RFC 3261 §25.1 hostname: labels of alphanum and inner hyphens, toplabel starts with ALPHA.
_HOSTNAME_RE = re.compile(
    r"(?:[A-Za-z0-9]+(?:-+[A-Za-z0-9]+)*\.)*[A-Za-z][A-Za-z0-9]*(?:-+[A-Za-z0-9]+)*\.?"
)
_IPV4_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
_IPV6_CHARS_RE = re.compile(r"[0-9A-Fa-f:.]+")
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_SCHEME_PREFIX_RE = re.compile(r"\s*(?:[Ss][Ii][Pp][Ss]?|[Tt][Ee][Ll]):")

# Canonical escaping: everything outside "unreserved" plus the part's own safe set.
# "+" in the user part is escaped as the reference API does ("%2B15551234567").
_USER_SAFE = "!*'()&=$,;?/"
_PARAM_SAFE = "!*'()[]/:&+$"
_HEADER_SAFE = "!*'()[]/?:+$"


def _quoter(safe: str) -> Any:
    """Return a function escaping like ``urllib.parse.quote(text, safe)``, fast when
    nothing needs escaping (the common case on the per-message parse path)."""
    plain = re.compile("[A-Za-z0-9_.~\\-" + re.escape(safe) + "]*")
    quote = urllib.parse.quote

    def quote_part(text: str) -> str:
        return text if plain.fullmatch(text) else quote(text, safe=safe)

    return quote_part


_quote_user = _quoter(_USER_SAFE)
# RFC 3261 §25.1 user-unreserved kept verbatim, "+" included (telephone numbers).
_quote_user_rfc = _quoter(_USER_SAFE + "+")
_quote_param = _quoter(_PARAM_SAFE)
_quote_header = _quoter(_HEADER_SAFE)


class InvalidURI(ValueError):
    """A SIP URI or network address does not follow RFC 3261 §19.1 / §25.1.

    The message echoes at most a short, password-redacted prefix of the input.
    """


def _redact(value: str) -> str:
    """Return *value* shortened and with any userinfo password replaced by ``***``."""
    at = value.rfind("@")
    match = _SCHEME_PREFIX_RE.match(value)
    start = match.end() if match else 0
    if at != -1:
        colon = value.find(":", start, at)
        if colon != -1:
            value = f"{value[: colon + 1]}***{value[at:]}"
    else:
        # "sip:alice:secret" (host forgotten): whatever follows the colon may be a password.
        colon = value.find(":", start)
        end = min(
            (i for i in (value.find(";", start), value.find("?", start)) if i != -1),
            default=len(value),
        )
        if start <= colon < end and not value[colon + 1 : end].isdigit():
            value = f"{value[: colon + 1]}***{value[end:]}"
    if len(value) > 80:
        value = value[:80] + "..."
    return repr(value)


@functools.lru_cache(maxsize=1024)
def _parse_host(text: str) -> Host:
    """Parse a URI host (RFC 3261 §25.1 ``host``): a hostname, IPv4 or ``[IPv6]``.

    Returns an ``ipaddress`` object for literals and the hostname ``str`` otherwise.
    """
    if text[:1] == "[":
        inner = text[1:-1]
        if text[-1:] != "]" or not _IPV6_CHARS_RE.fullmatch(inner):
            raise InvalidURI("invalid IPv6 reference (RFC 2732)")
        try:
            return ipaddress.IPv6Address(inner)
        except ValueError:
            raise InvalidURI("invalid IPv6 address") from None
    if _HOSTNAME_RE.fullmatch(text):
        return text
    if _IPV4_RE.fullmatch(text):
        try:
            return ipaddress.IPv4Address(text)
        except ValueError:
            raise InvalidURI("invalid IPv4 address") from None
    raise InvalidURI("invalid host" if text else "empty host")


def _coerce_host(host: Host) -> Host:
    """Validate a host given by a caller: ``ipaddress`` objects pass, strings are parsed."""
    if isinstance(host, ipaddress.IPv4Address | ipaddress.IPv6Address):
        if isinstance(host, ipaddress.IPv6Address) and host.scope_id:
            raise InvalidURI("IPv6 scope identifiers are not allowed in SIP URIs")
        return host
    if not isinstance(host, str):
        raise InvalidURI("host must be a str or an ipaddress object")
    if ":" in host and host[:1] != "[":
        host = f"[{host}]"
    return _parse_host(host)


def _format_host(host: Host) -> str:
    return f"[{host}]" if isinstance(host, ipaddress.IPv6Address) else str(host)


def _check_port(port: int) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port <= 65535:
        raise InvalidURI("port must be an integer in 1..65535")
    return port


class NetworkAddress(NamedTuple):
    """A transport address: host (``ipaddress`` object or hostname) and port.

    ``str()`` gives ``1.2.3.4:5060`` or ``[::1]:5061`` (RFC 3261 §25.1 hostport).
    """

    host: Host
    port: int

    @classmethod
    def parse(cls, value: str, default_port: int = 5060) -> NetworkAddress:
        """Parse ``host``, ``host:port`` or ``[v6]:port``; *default_port* when none is given.

        A bare IPv6 address without brackets is accepted as a host.
        Raises `InvalidURI` (a ``ValueError``) on anything else.
        """
        if not isinstance(value, str) or len(value) > 300:
            raise InvalidURI("invalid network address")
        text = value.strip()
        port_text = None
        if text[:1] == "[":
            end = text.find("]")
            if end == -1:
                raise InvalidURI("unclosed IPv6 bracket")
            host_text, rest = text[: end + 1], text[end + 1 :]
            if rest:
                if rest[0] != ":":
                    raise InvalidURI("invalid network address")
                port_text = rest[1:]
        elif text.count(":") > 1:
            host_text = f"[{text}]"
        else:
            host_text, sep, port_text = text.partition(":")
            if not sep:
                port_text = None
        host = _parse_host(host_text)
        if port_text is None:
            return cls(host, default_port)
        if not port_text.isascii() or not port_text.isdigit() or len(port_text) > 5:
            raise InvalidURI("invalid port")
        return cls(host, _check_port(int(port_text)))

    def __str__(self) -> str:
        return f"{_format_host(self.host)}:{self.port}"


def _format_tail(params: Mapping[str, str | None], hdrs: Mapping[str, str]) -> str:
    """``;uri-parameters?headers`` of a URI, escaped (RFC 3261 §25.1)."""
    parts: list[str] = []
    for name, value in params.items():
        parts += [";", _quote_param(name)]
        if value is not None:
            parts += ["=", _quote_param(value)]
    if hdrs:
        parts.append("?")
        parts.append("&".join(f"{_quote_header(k)}={_quote_header(v)}" for k, v in hdrs.items()))
    return "".join(parts)


class SipURI(str):
    """A parsed SIP or SIPS URI (RFC 3261 §19.1).

    Format: ``sip:user:password@host:port;uri-parameters?headers``.  The string
    value is the canonical form with the default port made explicit (5060 for
    ``sip``, 5061 for ``sips``), escaped user, parameters and headers, and
    **without the password**.  IPv6 hosts are written in brackets (RFC 2732);
    ``host`` holds an ``ipaddress`` object for literals, the hostname otherwise;
    ``port_given`` says whether the port was written (RFC 3263 §4.2 looks up DNS SRV
    records only when it was not).
    Parameter names are lower-cased (they compare case-insensitively,
    RFC 3261 §19.1.4).  ``parameters`` and ``headers`` are read-only mappings
    so the string value cannot go stale; use `with_parameters` / `replace`.

    >>> SipURI.parse("sip:alice@example.com")
    'sip:alice@example.com:5060'
    >>> SipURI.parse("sips:+15551234567@carrier.com:5061")
    'sips:%2B15551234567@carrier.com:5061'
    >>> SipURI.parse("sip:alice@[::1]:5060")
    'sip:alice@[::1]:5060'
    """

    __slots__ = (
        "headers",
        "host",
        "parameters",
        "password",
        "port",
        "port_given",
        "scheme",
        "user",
    )

    scheme: str
    host: Host
    user: str | None
    password: str | None
    port: int
    port_given: bool
    parameters: Mapping[str, str | None]
    headers: Mapping[str, str]

    def __new__(
        cls,
        scheme: str,
        host: Host | None = None,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        parameters: Mapping[str, str | None] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> SipURI:
        """Build a URI from its parts (validated); ``SipURI("sip:...")`` parses a string."""
        if host is None:
            if user is password is port is parameters is headers is None:
                return cls.parse(scheme)
            raise InvalidURI("host is required")
        if not isinstance(scheme, str) or scheme.lower() not in _DEFAULT_PORTS:
            raise InvalidURI("scheme must be 'sip' or 'sips'")
        scheme = scheme.lower()
        host = _coerce_host(host)
        port_given = port is not None
        port = _DEFAULT_PORTS[scheme] if port is None else _check_port(port)
        if user == "":
            user = None
        if password is not None and user is None:
            raise InvalidURI("a password needs a user part")
        params: dict[str, str | None] = {}
        for name, value in (parameters or {}).items():
            if not isinstance(name, str) or not name or (value is not None and value == ""):
                raise InvalidURI("URI parameter names and values must be non-empty")
            params[name.lower()] = value
        if "maddr" in params:
            _parse_param_host(params["maddr"])
        hdrs: dict[str, str] = {}
        for name, value in (headers or {}).items():
            if not isinstance(name, str) or not name or not isinstance(value, str):
                raise InvalidURI("URI header names must be non-empty strings")
            hdrs[name] = value
        return cls._build(scheme, host, user, password, port, params, hdrs, port_given)

    @classmethod
    def _build(
        cls,
        scheme: str,
        host: Host,
        user: str | None,
        password: str | None,
        port: int,
        params: dict[str, str | None],
        hdrs: dict[str, str],
        port_given: bool,
    ) -> SipURI:
        parts = [scheme, ":"]
        if user is not None:
            parts += [_quote_user(user), "@"]
        parts += [_format_host(host), ":", str(port), _format_tail(params, hdrs)]
        self = super().__new__(cls, "".join(parts))
        self.scheme = scheme
        self.host = host
        self.user = user
        self.password = password
        self.port = port
        self.port_given = port_given
        self.parameters = MappingProxyType(params)
        self.headers = MappingProxyType(hdrs)
        return self

    @classmethod
    def parse(cls, value: str) -> SipURI:
        """Parse a ``sip:`` or ``sips:`` URI (RFC 3261 §19.1, grammar §25.1).

        Raises `InvalidURI` (a ``ValueError``) for anything else: other schemes,
        empty or malformed host, unclosed IPv6 bracket, port outside 1..65535,
        characters the grammar does not allow, bad escapes, bad ``maddr``/``ttl``.
        """
        if isinstance(value, SipURI):
            return value
        if not isinstance(value, str):
            raise InvalidURI("SIP URI must be a str")
        if len(value) > MAX_URI_LENGTH:
            raise InvalidURI(f"SIP URI longer than {MAX_URI_LENGTH} characters")
        match = _URI_RE.fullmatch(value)
        if match is None or ("%" in value and _BAD_ESCAPE_RE.search(value)):
            bracket = value.rfind("[")
            if bracket != -1 and value.find("]", bracket) == -1:
                raise InvalidURI(f"unclosed IPv6 bracket in SIP URI: {_redact(value)}")
            raise InvalidURI(f"invalid SIP URI: {_redact(value)}")
        scheme, user, password, host_text, port_text, param_text, header_text = match.groups()
        try:
            host = _parse_host(host_text)
        except InvalidURI as exc:
            raise InvalidURI(f"{exc} in SIP URI: {_redact(value)}") from None
        scheme = scheme.lower()
        if port_text is None:
            port = _DEFAULT_PORTS[scheme]
        else:
            port = int(port_text)
            if not 0 < port <= 65535:
                raise InvalidURI(f"port out of range in SIP URI: {_redact(value)}")
        unquote = urllib.parse.unquote
        params: dict[str, str | None] = {}
        if param_text:
            for item in param_text[1:].split(";"):
                name, sep, pvalue = item.partition("=")
                params[unquote(name).lower()] = unquote(pvalue) if sep else None
            cls._check_known_params(params, value)
        hdrs: dict[str, str] = {}
        if header_text:
            for item in header_text.split("&"):
                name, _, hvalue = item.partition("=")
                hdrs[unquote(name)] = unquote(hvalue)
        return cls._build(
            scheme,
            host,
            unquote(user) if user is not None else None,
            unquote(password) if password is not None else None,
            port,
            params,
            hdrs,
            port_text is not None,
        )

    @staticmethod
    def _check_known_params(params: dict[str, str | None], value: str) -> None:
        """Validate the RFC 3261 §19.1.1 parameters whose syntax we rely on."""
        try:
            if "maddr" in params:
                _parse_param_host(params["maddr"])
            ttl = params.get("ttl", "0") or ""
            # At most 3 digits before int(): a 5,000-digit ttl is InvalidURI, not a bare
            # ValueError from int()'s digit limit.
            if not (ttl.isascii() and ttl.isdigit() and len(ttl) <= 3) or int(ttl) > 255:
                raise InvalidURI("invalid ttl parameter")
            transport = params.get("transport", "udp")
            if transport is None or not _TOKEN_RE.fullmatch(transport):
                raise InvalidURI("invalid transport parameter")
        except InvalidURI as exc:
            raise InvalidURI(f"{exc} in SIP URI: {_redact(value)}") from None

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (
                self.scheme,
                self.host,
                self.user,
                self.password,
                self.port if self.port_given else None,
                dict(self.parameters),
                dict(self.headers),
            ),
        )

    def replace(self, **changes: Any) -> SipURI:
        """Return a copy with the given parts (scheme, host, user, password, port,
        parameters, headers) replaced; the password is kept unless changed."""
        parts: dict[str, Any] = {
            "scheme": self.scheme,
            "host": self.host,
            "user": self.user,
            "password": self.password,
            "port": self.port if self.port_given else None,
            "parameters": self.parameters,
            "headers": self.headers,
        }
        unknown = set(changes) - set(parts)
        if unknown:
            raise TypeError(f"unknown SipURI parts: {sorted(unknown)}")
        parts.update(changes)
        if (
            changes.get("scheme") is not None
            and "port" not in changes
            and self.port == _DEFAULT_PORTS[self.scheme]
        ):
            parts["port"] = None
        return type(self)(**parts)

    def with_parameters(self, **params: str | None) -> SipURI:
        """Return a copy with URI parameters added or replaced (``None`` = flag such as ``lr``)."""
        return self.replace(parameters={**self.parameters, **params})

    def without_parameters(self, *names: str) -> SipURI:
        """Return a copy without the named URI parameters."""
        drop = {name.lower() for name in names}
        return self.replace(parameters={k: v for k, v in self.parameters.items() if k not in drop})

    def without_password(self) -> SipURI:
        """Return a copy with no password attached."""
        return self.replace(password=None)

    @property
    def maddr(self) -> NetworkAddress:
        """Where to send requests: the ``maddr`` parameter if present, else host and port.

        RFC 3261 §19.1.1: ``maddr`` overrides the address derived from the host.
        """
        maddr = self.parameters.get("maddr")
        if maddr is not None:
            return NetworkAddress(_parse_param_host(maddr), self.port)
        return NetworkAddress(self.host, self.port)

    @property
    def ttl(self) -> int | None:
        """The multicast ``ttl`` parameter (RFC 3261 §19.1.1), if present."""
        ttl = self.parameters.get("ttl")
        return int(ttl) if ttl is not None and ttl.isdigit() else None

    @property
    def transport(self) -> str:
        """The transport to use, upper case: ``TLS`` for ``sips:`` and for ``sip:``
        without a ``transport`` parameter (this library's secure default), else
        the parameter's value (``TCP``, ``UDP`` ...)."""
        if self.scheme != "sip":
            return "TLS"
        return (self.parameters.get("transport") or "TLS").upper()

    @property
    def aor(self) -> str:
        """The address-of-record form ``scheme:user@host`` (no port, parameters, headers).

        Unlike the string value, a ``+`` in the user part stays unescaped: it is
        a reserved character, so ``%2B`` would not compare equal (RFC 3261 §19.1.4)
        at a registrar that stores the AOR as configured.
        """
        host = _format_host(self.host)
        if self.user is None:
            return f"{self.scheme}:{host}"
        return f"{self.scheme}:{_quote_user_rfc(self.user)}@{host}"

    @property
    def wire(self) -> str:
        """The URI as it goes into a Request-URI or To: the port only when it was given,
        ``+`` (and the other reserved characters §25.1 allows in a user part) unescaped.

        The string value makes the default port explicit and escapes ``+``; a carrier
        matching the user part textually then misses ``%2B...``, and an explicit port
        turns off RFC 3263 §4.2 SRV resolution of the target, so requests to a URI the
        user gave carry this form (RFC 3261 §19.1.4, §25.1).  No password, like ``str``.
        """
        parts = [self.scheme, ":"]
        if self.user is not None:
            parts += [_quote_user_rfc(self.user), "@"]
        parts.append(_format_host(self.host))
        if self.port_given:
            parts += [":", str(self.port)]
        parts.append(_format_tail(self.parameters, self.headers))
        return "".join(parts)

    def equivalent(self, other: str) -> bool:
        """Compare two SIP URIs by the rules of RFC 3261 §19.1.4.

        Scheme, userinfo (case-sensitive, after unescaping), host (case-insensitive)
        and port must match; the ``user``, ``ttl``, ``method``, ``maddr`` and
        ``transport`` parameters must match when either URI has them; other
        parameters only when both have them (values case-insensitive); headers
        must all match.  Deviation: the default port is always explicit here, so
        ``sip:a@h`` and ``sip:a@h:5060`` compare equal.  Unparseable *other* -> False.
        """
        try:
            that = SipURI.parse(other)
        except InvalidURI:
            return False
        if (self.scheme, self.user, self.password, self.port) != (
            that.scheme,
            that.user,
            that.password,
            that.port,
        ):
            return False
        if isinstance(self.host, str) != isinstance(that.host, str):
            return False
        if isinstance(self.host, str):
            if self.host.lower() != str(that.host).lower():
                return False
        elif self.host != that.host:
            return False
        mine, theirs = self.parameters, that.parameters
        for name in mine.keys() | theirs.keys():
            if name in mine and name in theirs:
                a, b = mine[name], theirs[name]
                if (a or "").lower() != (b or "").lower() or (a is None) != (b is None):
                    return False
            elif name in _ALWAYS_COMPARED_PARAMS:
                return False
        own_headers = {k.lower(): v for k, v in self.headers.items()}
        other_headers = {k.lower(): v for k, v in that.headers.items()}
        return own_headers == other_headers


#: RFC 3261 §19.1.4: these parameters must match even when only one URI has them.
_ALWAYS_COMPARED_PARAMS = frozenset({"user", "ttl", "method", "maddr", "transport"})


def _parse_param_host(value: str | None) -> Host:
    """Parse the host given in a ``maddr`` parameter (RFC 3261 §19.1.1)."""
    if not value:
        raise InvalidURI("invalid maddr parameter")
    if ":" in value and value[:1] != "[":
        value = f"[{value}]"
    try:
        return _parse_host(value)
    except InvalidURI:
        raise InvalidURI("invalid maddr parameter") from None


# A quoted-string at the start of the text (RFC 3261 §25.1); possessive, so linear.
_QUOTED_DISPLAY_RE = re.compile(r'"([^"\\]*+(?:\\.[^"\\]*+)*+)"')
_QUOTED_PAIR_RE = re.compile(r"\\(.)")


class CallerID(str):
    """A From/To header value (RFC 3261 §20.20 / §20.39) with structured access.

    It is a plain ``str`` (wire format unchanged); ``repr()`` is a short,
    anonymised form for logs showing at most the last four characters of the
    user (display name first) and the host.

    >>> str(CallerID('"08001234567" <sip:08001234567@telefonica.de>;tag=abc'))
    '"08001234567" <sip:08001234567@telefonica.de>;tag=abc'
    >>> repr(CallerID('"08001234567" <sip:08001234567@telefonica.de>;tag=abc'))
    '***4567@telefonica.de'
    >>> repr(CallerID('sip:alice@example.com'))
    '*lice@example.com'
    """

    __slots__ = ()

    def _split(self) -> tuple[str, str]:
        """Return (addr-spec, header-parameter text) following RFC 3261 §20.10.

        Without angle brackets the URI ends at the first ``;`` (its
        parameters are header parameters).
        """
        start = self.find("<")
        if start != -1:
            end = self.find(">", start)
            if end == -1:
                return self[start + 1 :].strip(), ""
            return self[start + 1 : end].strip(), self[end + 1 :]
        addr, sep, rest = self.strip().partition(";")
        return addr.strip(), sep + rest

    @property
    def display_name(self) -> str | None:
        """Display name (quoted-string unescaped, or token form), if present.

        Read with ``str`` methods and one possessive match, linear in the value: the
        regex it replaces (``\\s*([^<"]*?)\\s*<``) was cubic in whitespace runs that
        survive header parsing (VT, U+0085, U+2028), issue 14 finding 3.
        """
        text = self.lstrip()
        if text[:1] == '"':
            match = _QUOTED_DISPLAY_RE.match(text)
            if match is None or text[match.end() :].lstrip()[:1] != "<":
                return None
            return _QUOTED_PAIR_RE.sub(r"\1", match.group(1)).strip() or None
        name, bracket, _ = text.partition("<")
        if not bracket or '"' in name:
            return None
        return name.rstrip() or None

    @property
    def uri(self) -> SipURI | None:
        """The SIP/SIPS URI of the header value; ``None`` for ``tel:`` and other schemes.

        Raises `InvalidURI` if it claims to be a SIP URI but is malformed.
        """
        addr, _ = self._split()
        if addr[:4].lower() == "sip:" or addr[:5].lower() == "sips:":
            return SipURI.parse(addr)
        return None

    def _userinfo_host(self) -> tuple[str | None, str | None]:
        addr, _ = self._split()
        colon = addr.find(":")
        scheme = addr[:colon].lower()
        if scheme not in _DEFAULT_PORTS:
            return None, None
        rest = addr[colon + 1 :]
        at = rest.find("@")
        if at == -1:
            return None, None
        user = rest[:at].partition(":")[0]
        host = re.split(r"[;?>\s,]", rest[at + 1 :], maxsplit=1)[0]
        return user or None, host or None

    @property
    def user(self) -> str | None:
        """User part of the SIP URI as written (phone number or user name), never the password."""
        return self._userinfo_host()[0]

    @property
    def host(self) -> str | None:
        """Host (carrier domain, with port if written) of the SIP URI's user@host."""
        return self._userinfo_host()[1]

    @property
    def tag(self) -> str | None:
        """The ``tag`` header parameter (RFC 3261 §19.3), if present."""
        _, params = self._split()
        for item in params.split(";"):
            name, sep, value = item.partition("=")
            if sep and name.strip().lower() == "tag":
                return value.strip() or None
        return None

    def __repr__(self) -> str:
        user, host = self._userinfo_host()
        shown = self.display_name or user or ""
        masked = "*" * min(3, max(0, len(shown) - 4)) + shown[-4:] if shown else "****"
        return f"{masked}@{host}" if host else masked
