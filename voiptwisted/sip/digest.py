"""Digest access authentication for SIP clients (RFC 3261 §22.4, RFC 2617, RFC 7616, RFC 8760).

`Challenge.parse` reads a ``WWW-Authenticate`` / ``Proxy-Authenticate`` value;
`DigestClient.authorization` computes the matching ``Authorization`` /
``Proxy-Authorization`` value.  `Credentials` is the policy on top: which
realms we answer at all (the registrar's, bound by its first challenge, and
the ones the user configured), the strongest algorithm among those offered,
and no qop-less MD5 unless the user allows it.  Algorithms: MD5, SHA-256 and SHA-512-256
(the FIPS 180-4 SHA-512/256 function, not a truncated SHA-512), each with its
``-sess`` variant; qop ``auth`` (preferred) and ``auth-int``; ``userhash``
(RFC 7616 §3.4.4).  Passwords never appear in ``repr()`` or exception text.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["Challenge", "Credentials", "DigestClient", "DigestError", "DigestRefused"]

#: Longest challenge header value accepted.
MAX_CHALLENGE_LENGTH = 8192
#: Number of nonces whose nonce-count the client remembers.
MAX_TRACKED_NONCES = 32
#: Challenges read from one response; more are ignored (a response is remote input).
MAX_CHALLENGES = 16


class DigestError(ValueError):
    """A challenge cannot be parsed or answered (bad syntax, unsupported algorithm or qop)."""


class DigestRefused(DigestError):
    """We could answer a challenge but our policy says not to (realm, legacy digest).

    The message says what was refused and how the user can allow it; it never
    contains a password.
    """


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha512_256(data: bytes) -> str:
    # FIPS 180-4 SHA-512/256 has its own initial hash values: truncating SHA-512 is wrong.
    return hashlib.new("sha512_256", data).hexdigest()


#: RFC 7616 §3.2 / RFC 8760 §2: algorithm name (upper case) -> (canonical name, hash, sess).
_ALGORITHMS: dict[str, tuple[str, Callable[[bytes], str], bool]] = {
    "MD5": ("MD5", _md5, False),
    "MD5-SESS": ("MD5-sess", _md5, True),
    "SHA-256": ("SHA-256", _sha256, False),
    "SHA-256-SESS": ("SHA-256-sess", _sha256, True),
    "SHA-512-256": ("SHA-512-256", _sha512_256, False),
    "SHA-512-256-SESS": ("SHA-512-256-sess", _sha512_256, True),
}

#: Algorithm strength for `Challenge.strength` (RFC 8760 §2.4 / RFC 7616 §3.7 local policy).
_STRENGTH = {"MD5": 1, "SHA-256": 2, "SHA-512-256": 3}

_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_WS_RE = re.compile(r"[ \t\r\n]*")
_QUOTED_RE = re.compile(r'"((?:[^"\\]|\\[\s\S])*)"')
_QUOTED_PAIR_RE = re.compile(r"\\([\s\S])")


def _quote(value: str) -> str:
    """Render *value* as an RFC 7230 quoted-string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_auth_params(text: str, pos: int) -> dict[str, str]:
    """Parse ``name=value`` pairs (token or quoted-string values, RFC 7235 §2.1)."""
    params: dict[str, str] = {}
    end = len(text)
    while True:
        pos = _WS_RE.match(text, pos).end()
        if pos >= end:
            break
        if text[pos] == ",":
            pos += 1
            continue
        name_match = _TOKEN_RE.match(text, pos)
        if name_match is None:
            raise DigestError(f"malformed challenge: expected a parameter name at offset {pos}")
        name = name_match.group().lower()
        pos = _WS_RE.match(text, name_match.end()).end()
        if pos >= end or text[pos] != "=":
            raise DigestError(f"malformed challenge: parameter {name[:40]!r} has no value")
        pos = _WS_RE.match(text, pos + 1).end()
        if pos < end and text[pos] == '"':
            quoted = _QUOTED_RE.match(text, pos)
            if quoted is None:
                raise DigestError(f"malformed challenge: unterminated quoted value for {name!r}")
            value = _QUOTED_PAIR_RE.sub(r"\1", quoted.group(1))
            pos = quoted.end()
        else:
            token = _TOKEN_RE.match(text, pos)
            if token is None:
                raise DigestError(f"malformed challenge: bad value for parameter {name!r}")
            value = token.group()
            pos = token.end()
        if name in params:
            raise DigestError(f"malformed challenge: parameter {name!r} repeated (RFC 7235 §2.1)")
        params[name] = value
        pos = _WS_RE.match(text, pos).end()
        if pos < end and text[pos] != ",":
            raise DigestError(f"malformed challenge: expected ',' at offset {pos}")
    return params


@dataclasses.dataclass(frozen=True)
class Challenge:
    """A Digest challenge from ``WWW-Authenticate`` or ``Proxy-Authenticate`` (RFC 7616 §3.3).

    ``algorithm`` keeps the server's spelling of unknown algorithms so the
    caller can skip challenges it cannot answer (see `supported`).
    """

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    userhash: bool = False
    domain: str | None = None
    charset: str | None = None
    scheme: str = "Digest"

    @classmethod
    def parse(cls, header_value: str) -> Challenge:
        """Parse one Digest challenge.

        Parameter names are case-insensitive; values may be tokens or quoted
        strings (with ``\\"`` escapes and commas inside); ``qop`` lists such as
        ``"auth,auth-int"`` become a tuple; ``stale``/``userhash`` accept any
        case of ``true``.  Raises `DigestError` for anything malformed, for a
        scheme other than Digest, or when ``realm`` or ``nonce`` is missing.
        """
        if not isinstance(header_value, str):
            raise DigestError("challenge must be a str")
        if len(header_value) > MAX_CHALLENGE_LENGTH:
            raise DigestError(f"challenge longer than {MAX_CHALLENGE_LENGTH} characters")
        if not header_value.isascii():
            # A realm or nonce outside ASCII (or an undecodable byte, kept as a lone
            # surrogate by the message parser) cannot be hashed the way the server
            # did with any certainty: an unanswerable challenge, not an exception later.
            raise DigestError("challenge has non-ASCII characters")
        pos = _WS_RE.match(header_value).end()
        scheme = _TOKEN_RE.match(header_value, pos)
        if scheme is None or scheme.group().lower() != "digest":
            raise DigestError("not a Digest challenge")
        rest = scheme.end()
        if rest < len(header_value) and header_value[rest] not in " \t":
            raise DigestError("not a Digest challenge")
        params = _parse_auth_params(header_value, rest)
        if "realm" not in params:
            raise DigestError("Digest challenge without realm")
        if not params.get("nonce"):
            raise DigestError("Digest challenge without nonce")
        algorithm = params.get("algorithm", "MD5")
        known = _ALGORITHMS.get(algorithm.upper())
        qop = tuple(
            item.strip().lower() for item in params.get("qop", "").split(",") if item.strip()
        )
        return cls(
            realm=params["realm"],
            nonce=params["nonce"],
            algorithm=known[0] if known else algorithm,
            qop=qop,
            opaque=params.get("opaque"),
            stale=params.get("stale", "").lower() == "true",
            userhash=params.get("userhash", "").lower() == "true",
            domain=params.get("domain"),
            charset=params.get("charset"),
            scheme="Digest",
        )

    @property
    def supported(self) -> bool:
        """True if `DigestClient` can answer this challenge (algorithm and qop)."""
        if self.algorithm.upper() not in _ALGORITHMS:
            return False
        return not self.qop or "auth" in self.qop or "auth-int" in self.qop

    @property
    def strength(self) -> int:
        """Rank of the algorithm, higher is stronger: SHA-512-256 > SHA-256 > MD5 (0 unknown).

        RFC 8760 §2.4 and RFC 7616 §3.7 let a client that supports several of the
        offered algorithms choose by local policy; ours is the strongest hash.
        The ``-sess`` variants rank with their hash.
        """
        return _STRENGTH.get(self.algorithm.upper().removesuffix("-SESS"), 0)

    @property
    def legacy(self) -> bool:
        """True for qop-less MD5 (the RFC 2069 form): no client nonce, so the server
        chooses every input of the hash and a dictionary attack on the response is cheap."""
        return not self.qop and self.algorithm.upper().removesuffix("-SESS") == "MD5"


class DigestClient:
    """Computes Digest credentials for one user (RFC 7616 §3.4, RFC 3261 §22.4).

    Keeps a nonce-count per nonce (RFC 7616 §3.4: ``nc`` counts the requests
    sent with a nonce, starting at 1), so a new nonce starts again at
    ``00000001``.  The password is held privately and never shown.
    """

    __slots__ = ("__password", "_nonce_counts", "username")

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self.__password = password
        self._nonce_counts: OrderedDict[str, int] = OrderedDict()

    def __repr__(self) -> str:
        return f"DigestClient(username={self.username!r})"

    @staticmethod
    def select(challenges: Iterable[Challenge]) -> Challenge:
        """Return the challenge with the strongest algorithm this client can answer.

        SHA-512-256 > SHA-256 > MD5 whatever order the server listed them in
        (RFC 8760 §2.4, RFC 7616 §3.7: a local policy may choose; a server
        listing MD5 first must not downgrade us); among equals the server's
        order decides.  Raises `DigestError` if none is usable.
        """
        best: Challenge | None = None
        for challenge in challenges:
            if challenge.supported and (best is None or challenge.strength > best.strength):
                best = challenge
        if best is None:
            raise DigestError("no Digest challenge with a supported algorithm and qop")
        return best

    def _next_nc(self, nonce: str) -> int:
        count = self._nonce_counts.pop(nonce, 0) + 1
        self._nonce_counts[nonce] = count
        while len(self._nonce_counts) > MAX_TRACKED_NONCES:
            self._nonce_counts.popitem(last=False)
        return count

    def authorization(
        self,
        challenge: Challenge,
        method: str,
        uri: str,
        body: bytes = b"",
        *,
        cnonce: str | None = None,
    ) -> str:
        """Return the ``Authorization`` / ``Proxy-Authorization`` header value for a request.

        *uri* is the Request-URI as sent (RFC 3261 §22.4: ``digest-uri``).  qop
        ``auth`` is preferred; ``auth-int`` (hashing *body*) is used when it is
        the only one offered; without qop the RFC 2069 form is produced.
        Raises `DigestError` for an unsupported algorithm or qop.
        """
        try:
            algorithm, hash_hex, sess = _ALGORITHMS[challenge.algorithm.upper()]
        except KeyError:
            raise DigestError(
                f"unsupported digest algorithm {challenge.algorithm[:40]!r}; supported: "
                + ", ".join(name for name, _, _ in _ALGORITHMS.values())
            ) from None
        if not challenge.qop:
            qop = None
        elif "auth" in challenge.qop:
            qop = "auth"
        elif "auth-int" in challenge.qop:
            qop = "auth-int"
        else:
            raise DigestError("challenge offers no supported qop (auth, auth-int)")

        def h(text: str) -> str:
            try:
                return hash_hex(text.encode("utf-8"))
            except UnicodeEncodeError:
                # A lone surrogate (an undecodable byte) in a Challenge built by hand.
                raise DigestError("challenge or credentials cannot be encoded as UTF-8") from None

        if cnonce is None:
            cnonce = secrets.token_hex(16)
        # RFC 7616 §3.4.2: A1, and for -sess H(A1):nonce:cnonce.
        ha1 = h(f"{self.username}:{challenge.realm}:{self.__password}")
        if sess:
            ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}")
        # RFC 7616 §3.4.3: A2 = method:uri [":" H(entity-body)].
        a2 = f"{method}:{uri}"
        if qop == "auth-int":
            a2 = f"{a2}:{hash_hex(body)}"
        ha2 = h(a2)
        if qop is None:
            response = h(f"{ha1}:{challenge.nonce}:{ha2}")
            nc_text = None
        else:
            nc_text = f"{self._next_nc(challenge.nonce):08x}"
            response = h(f"{ha1}:{challenge.nonce}:{nc_text}:{cnonce}:{qop}:{ha2}")

        parts = [self._username_param(challenge, h)]
        parts += [
            f"realm={_quote(challenge.realm)}",
            f"nonce={_quote(challenge.nonce)}",
            f"uri={_quote(uri)}",
            f'response="{response}"',
            f"algorithm={algorithm}",
        ]
        if qop is not None or sess:
            parts.append(f"cnonce={_quote(cnonce)}")
        if challenge.opaque is not None:
            parts.append(f"opaque={_quote(challenge.opaque)}")
        if qop is not None:
            parts += [f"qop={qop}", f"nc={nc_text}"]
        if challenge.userhash:
            parts.append("userhash=true")
        return "Digest " + ", ".join(parts)

    def _username_param(self, challenge: Challenge, h: Callable[[str], str]) -> str:
        """RFC 7616 §3.4.4: hashed username, quoted ASCII, or RFC 5987 ``username*``."""
        if challenge.userhash:
            return f'username="{h(f"{self.username}:{challenge.realm}")}"'
        if self.username.isascii() and self.username.isprintable():
            return f"username={_quote(self.username)}"
        return "username*=UTF-8''" + urllib.parse.quote(self.username, safe="")


#: How a refused realm can be allowed, for the log line (the plugin's option and the API's).
_ALLOW_REALM_HINT = "allow it with --auth-realm {realm!r} (ServiceConfig.auth_realms)"
_ALLOW_LEGACY_HINT = "allow it with --allow-legacy-digest (ServiceConfig.allow_legacy_digest)"


class Credentials:
    """Our Digest credentials and the realms they may be sent to (RFC 3261 §22, §26.3.2.3).

    A 401/407 can come from anyone on a call's path, the callee included: answering
    every realm hands any callee a response hash to crack offline.  So a challenge
    is answered only for:

    * the registrar's realm: the first challenge to a REGISTER over the flow we
      opened to the registrar binds it (`answer` / `choose` with ``registrar=True``);
    * the realms in *realms* (answered with *username*/*password*) and in *table*
      (``{realm: (username, password)}``, for a proxy with its own account).

    Among the challenges of one response the strongest algorithm we support wins
    (`Challenge.strength`); qop-less MD5 (RFC 2069, no client nonce) is refused
    unless *allow_legacy_digest*.  Refusals raise `DigestRefused` with a message
    naming the realm and how to allow it.  Passwords are never shown.
    """

    __slots__ = (
        "__table",
        "_clients",
        "allow_legacy_digest",
        "password_configured",
        "realms",
        "registrar_realm",
        "username",
    )

    def __init__(
        self,
        username: str,
        password: str | None = None,
        *,
        realms: Iterable[str] = (),
        table: Mapping[str, tuple[str, str]] | None = None,
        allow_legacy_digest: bool = False,
    ) -> None:
        self.username = username
        #: The realm bound by the registrar's first challenge (None until then).
        self.registrar_realm: str | None = None
        self.allow_legacy_digest = bool(allow_legacy_digest)
        self.password_configured = password is not None
        self.__table: dict[str | None, tuple[str, str]] = {}
        if password is not None:
            # Key None: the AOR's own credentials (registrar realm and *realms*).
            self.__table[None] = (username, password)
            for realm in realms:
                self.__table[str(realm)] = (username, password)
        for realm, (user, secret) in (table or {}).items():
            self.__table[str(realm)] = (str(user), str(secret))
        #: Realms configured by the user (the registrar's is added when bound).
        self.realms = frozenset(key for key in self.__table if key is not None)
        self._clients: dict[str, DigestClient] = {}

    def __repr__(self) -> str:
        return (
            f"Credentials(username={self.username!r}, realms={sorted(self.realms)!r}, "
            f"registrar_realm={self.registrar_realm!r})"
        )

    def allows(self, realm: str) -> bool:
        """True if a challenge for *realm* may be answered (configured or the registrar's)."""
        return realm in self.realms or (realm == self.registrar_realm and None in self.__table)

    def choose(self, response: Any, *, registrar: bool = False) -> tuple[str, Challenge]:
        """The ``(header name, challenge)`` to answer *response* (a 401 or 407) with.

        ``registrar=True`` for a REGISTER sent on our own flow to the registrar: when
        no realm is bound yet, the challenge chosen binds its realm.  Raises
        `DigestRefused` when a usable challenge exists but policy forbids it, and
        `DigestError` ("no usable challenge ...") when none can be answered at all.
        """
        code = response.status_code
        want = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
        header = "Authorization" if code == 401 else "Proxy-Authorization"
        problems: list[str] = []
        refused_realms: list[str] = []
        legacy = False
        best: Challenge | None = None
        bind = registrar and self.registrar_realm is None and None in self.__table
        for value in response.headers.getlist(want)[:MAX_CHALLENGES]:
            try:
                challenge = Challenge.parse(value)
            except DigestError as exc:
                problems.append(str(exc))
                continue
            if not challenge.supported:
                problems.append(f"unsupported algorithm {challenge.algorithm[:40]!r} or qop")
                continue
            if not (bind or self.allows(challenge.realm)):
                refused_realms.append(challenge.realm)
                continue
            if challenge.legacy and not self.allow_legacy_digest:
                legacy = True
                continue
            if best is None or challenge.strength > best.strength:
                best = challenge
        if best is not None:
            if bind:
                self.registrar_realm = best.realm
            return header, best
        if refused_realms:
            realm = refused_realms[0][:80]
            bound = (
                f"the registrar's realm {self.registrar_realm[:80]!r}"
                if self.registrar_realm is not None
                else "the registrar's realm (none bound yet)"
            )
            raise DigestRefused(
                f"not answering the {code} challenge for realm {realm!r}: credentials go only "
                f"to {bound} and configured realms; " + _ALLOW_REALM_HINT.format(realm=realm)
            )
        if legacy:
            raise DigestRefused(
                f"not answering the {code} challenge: qop-less MD5 (RFC 2069) is refused; "
                + _ALLOW_LEGACY_HINT
            )
        detail = "; ".join(problems) if problems else f"no {want} header"
        raise DigestError(f"no usable challenge ({detail})")

    def authorization(self, challenge: Challenge, method: str, uri: str, body: bytes = b"") -> str:
        """The ``Authorization`` value for *challenge* with its realm's credentials.

        Raises `DigestRefused` if the realm is not allowed (see `allows`).
        """
        realm = challenge.realm
        if not self.allows(realm):
            raise DigestRefused(f"realm {realm[:80]!r} is not allowed")
        client = self._clients.get(realm)
        if client is None:
            key = realm if realm in self.__table else None
            client = self._clients[realm] = DigestClient(*self.__table[key])
        return client.authorization(challenge, method, uri, body)

    def answer(self, response: Any, request: Any, *, registrar: bool = False) -> tuple[str, str]:
        """``(header name, value)`` answering *response* to *request* (RFC 3261 §22.2, §22.3).

        *request* is the request that was challenged (its method, Request-URI and
        body go into the digest).  Raises `DigestError` / `DigestRefused` as `choose`.
        """
        header, challenge = self.choose(response, registrar=registrar)
        value = self.authorization(
            challenge, request.method, str(request.uri), request.body or b""
        )
        return header, value
