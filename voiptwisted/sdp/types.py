"""SDP field types (RFC 4566 §5), RTP payload formats (RFC 3551 §6) and SDES crypto (RFC 4568).

Every ``parse`` here raises only `SDPParseError` (a `ValueError`) for bad input.
Text is decoded as UTF-8 with ``surrogateescape`` so that any byte string a peer
sends survives a parse/serialise round trip unchanged.

A parsed `MediaDescription` remembers the order and exact text of its lines
(its *layout*), so ``bytes()`` reproduces the input line for line even where
``a=rtpmap``/``a=fmtp`` were interleaved with other attributes; anything changed
after parsing is written in canonical RFC 4566 form at a sensible position.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import functools
import ipaddress
import re
import secrets
from collections.abc import Iterable
from typing import Any, ClassVar, NamedTuple, Protocol, runtime_checkable

__all__ = [
    "DIRECTIONS",
    "SUITES",
    "Attribute",
    "Bandwidth",
    "ByteSerializableObject",
    "ConnectionData",
    "CryptoAttribute",
    "CryptoKeyParam",
    "CryptoSuite",
    "Field",
    "IntField",
    "MediaDescription",
    "Origin",
    "PayloadTypeSpec",
    "RTPPayloadFormat",
    "SDESError",
    "SDPParseError",
    "StaticPayloadType",
    "StrField",
    "Timing",
    "ip_literal",
    "redact_sdp",
]

ENCODING = "utf-8"
_ERRORS = "surrogateescape"

#: RFC 3264 §5.1 / RFC 4566 §6 direction attributes.
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

#: Attributes whose values are secrets (SDES keys, ICE passwords): never shown in ``repr``.
_SECRET_ATTRIBUTES = frozenset({"crypto", "ice-pwd", "key-mgmt"})

_UINT = re.compile(r"[0-9]{1,20}")


class SDPParseError(ValueError):
    """Raised for SDP that cannot be parsed; the message names the offending line."""


def _text(data: bytes | bytearray | memoryview | str) -> str:
    if isinstance(data, str):
        return data
    return bytes(data).decode(ENCODING, _ERRORS)


def _excerpt(value: str, limit: int = 60) -> str:
    """A short ``repr`` of *value* for error messages."""
    if len(value) > limit:
        value = value[:limit] + "..."
    return repr(value)


@functools.lru_cache(maxsize=256)
def ip_literal(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """*text* as an IP address, or None when it is not one (a hostname, garbage).

    Cached and bounded: a call's SDP work reads the same few addresses (ours, the peer's)
    several times, and each ``ipaddress.ip_address`` builds and checks one object per
    octet (issue 16).  The objects are immutable, so sharing them is safe.
    """
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _uint(value: str, what: str, maximum: int | None = None) -> int:
    """Parse an RFC 4566 ``1*DIGIT`` (ASCII digits only, no sign, no spaces)."""
    if not _UINT.fullmatch(value):
        raise SDPParseError(f"{what} must be a non-negative integer, got {_excerpt(value)}")
    number = int(value)
    if maximum is not None and number > maximum:
        raise SDPParseError(f"{what} {number} is out of range (maximum {maximum})")
    return number


class ByteSerializableObject:
    """Base of SDP values: ``bytes(obj)`` is the wire form, ``str(obj)`` its text."""

    __slots__ = ()

    def __bytes__(self) -> bytes:  # pragma: no cover - every subclass overrides
        raise NotImplementedError

    def __str__(self) -> str:
        return bytes(self).decode(ENCODING, _ERRORS)

    @classmethod
    def parse(cls, data: bytes | str) -> Any:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


@runtime_checkable
class Field(Protocol):
    """SDP field descriptor protocol: how one ``<letter>=`` line maps to an attribute."""

    letter: str
    session_attr: str
    is_list: bool
    media_attr: str | None

    @staticmethod
    def parse(value: str) -> object:
        """Parse a raw SDP line value."""


@dataclasses.dataclass(slots=True, frozen=True)
class IntField:
    """Descriptor for SDP fields whose value is an integer (``v=``)."""

    letter: str
    session_attr: str
    is_list: bool = False
    media_attr: str | None = None

    @staticmethod
    def parse(value: str) -> int:
        return _uint(value, "value")


@dataclasses.dataclass(slots=True, frozen=True)
class StrField:
    """Descriptor for SDP fields kept as plain text (``s= i= u= e= p= z= k=``)."""

    letter: str
    session_attr: str
    is_list: bool = False
    media_attr: str | None = None

    @staticmethod
    def parse(value: str) -> str:
        return value


@dataclasses.dataclass(slots=True, frozen=True, repr=False)
class Attribute(ByteSerializableObject):
    """Attribute field (``a=``), RFC 4566 §5.13: ``a=<name>`` or ``a=<name>:<value>``.

    ``value`` is ``None`` for a property attribute (no colon) and ``""`` for
    ``a=name:`` so the two round-trip distinctly.
    """

    letter: ClassVar[str] = "a"
    session_attr: ClassVar[str] = "attributes"
    is_list: ClassVar[bool] = True
    media_attr: ClassVar[str | None] = "attributes"

    name: str
    value: str | None = None

    def __bytes__(self) -> bytes:
        if self.value is None:
            return self.name.encode(ENCODING, _ERRORS)
        return f"{self.name}:{self.value}".encode(ENCODING, _ERRORS)

    def __repr__(self) -> str:
        value = "<redacted>" if self.name in _SECRET_ATTRIBUTES else repr(self.value)
        return f"Attribute(name={self.name!r}, value={value})"

    @classmethod
    def parse(cls, data: bytes | str) -> Attribute:
        value = _text(data)
        name, colon, attr_value = value.partition(":")
        if not name:
            raise SDPParseError("attribute name is empty")
        return cls(name=name, value=attr_value if colon else None)


@dataclasses.dataclass(slots=True, frozen=True)
class Bandwidth(ByteSerializableObject):
    """Bandwidth (``b=<bwtype>:<bandwidth>``), RFC 4566 §5.8: ``AS``, ``CT``, RFC 3890 ``TIAS``."""

    letter: ClassVar[str] = "b"
    session_attr: ClassVar[str] = "bandwidths"
    is_list: ClassVar[bool] = True
    media_attr: ClassVar[str | None] = "bandwidths"

    bwtype: str
    bandwidth: int

    def __bytes__(self) -> bytes:
        return f"{self.bwtype}:{self.bandwidth}".encode(ENCODING, _ERRORS)

    @classmethod
    def parse(cls, data: bytes | str) -> Bandwidth:
        value = _text(data)
        bwtype, colon, bandwidth = value.partition(":")
        if not colon or not bwtype:
            raise SDPParseError(f"b= must be '<bwtype>:<bandwidth>', got {_excerpt(value)}")
        return cls(bwtype=bwtype, bandwidth=_uint(bandwidth, "bandwidth"))


@dataclasses.dataclass(slots=True, frozen=True)
class ConnectionData(ByteSerializableObject):
    """Connection data (``c=<nettype> <addrtype> <connection-address>``), RFC 4566 §5.7.

    ``connection_address`` is kept verbatim (it may carry ``/ttl`` or ``/count``
    for multicast); `address` is the host part alone.
    """

    letter: ClassVar[str] = "c"
    session_attr: ClassVar[str] = "connection"
    is_list: ClassVar[bool] = False
    media_attr: ClassVar[str | None] = "connection"

    nettype: str
    addrtype: str
    connection_address: str

    def __bytes__(self) -> bytes:
        return f"{self.nettype} {self.addrtype} {self.connection_address}".encode(
            ENCODING, _ERRORS
        )

    @property
    def address(self) -> str:
        """The host without any multicast ``/ttl`` or ``/count`` suffix."""
        return self.connection_address.partition("/")[0]

    @classmethod
    def parse(cls, data: bytes | str) -> ConnectionData:
        value = _text(data)
        parts = value.split()
        if len(parts) != 3:
            raise SDPParseError(
                f"c= must be '<nettype> <addrtype> <address>', got {_excerpt(value)}"
            )
        return cls(nettype=parts[0], addrtype=parts[1], connection_address=parts[2])


@dataclasses.dataclass(slots=True, frozen=True)
class Origin(ByteSerializableObject):
    """Origin (``o=<user> <sess-id> <sess-version> <nettype> <addrtype> <addr>``), RFC 4566 §5.2.

    ``sess_id`` and ``sess_version`` stay strings (as in the reference) but must be
    digits, so RFC 3264 §8 version arithmetic (``int(sess_version) + 1``) is safe.
    """

    letter: ClassVar[str] = "o"
    session_attr: ClassVar[str] = "origin"
    is_list: ClassVar[bool] = False
    media_attr: ClassVar[str | None] = None

    username: str
    sess_id: str
    sess_version: str
    nettype: str
    addrtype: str
    unicast_address: str

    def __bytes__(self) -> bytes:
        return (
            f"{self.username} {self.sess_id} {self.sess_version}"
            f" {self.nettype} {self.addrtype} {self.unicast_address}"
        ).encode(ENCODING, _ERRORS)

    @classmethod
    def parse(cls, data: bytes | str) -> Origin:
        value = _text(data)
        parts = value.split()
        if len(parts) != 6:
            raise SDPParseError(
                "o= must have 6 fields '<username> <sess-id> <sess-version> <nettype>"
                f" <addrtype> <address>', got {_excerpt(value)}"
            )
        _uint(parts[1], "o= sess-id")
        _uint(parts[2], "o= sess-version")
        return cls(*parts)


@dataclasses.dataclass(slots=True, frozen=True)
class Timing(ByteSerializableObject):
    """Timing (``t=<start-time> <stop-time>``), RFC 4566 §5.9, with its ``r=`` lines (§5.10).

    ``repeats`` holds the values of the ``r=`` lines that follow this ``t=`` line,
    verbatim; ``bytes()`` is the ``t=`` value only.
    """

    letter: ClassVar[str] = "t"
    session_attr: ClassVar[str] = "timings"
    is_list: ClassVar[bool] = True
    media_attr: ClassVar[str | None] = None

    start_time: int
    stop_time: int
    repeats: tuple[str, ...] = ()

    def __bytes__(self) -> bytes:
        return f"{self.start_time} {self.stop_time}".encode()

    @classmethod
    def parse(cls, data: bytes | str) -> Timing:
        value = _text(data)
        parts = value.split()
        if len(parts) != 2:
            raise SDPParseError(f"t= must be '<start-time> <stop-time>', got {_excerpt(value)}")
        return cls(
            start_time=_uint(parts[0], "t= start-time"),
            stop_time=_uint(parts[1], "t= stop-time"),
        )


class PayloadTypeSpec(NamedTuple):
    """Typed specification for a static RTP payload type (RFC 3551 §6)."""

    pt: int
    sample_rate: int
    encoding_name: str
    channels: int = 1
    #: Samples per standard 20 ms RTP frame; 0 = variable or not applicable.
    frame_size: int = 0


class StaticPayloadType(PayloadTypeSpec, enum.Enum):
    """Static RTP payload types of RFC 3551 §6 (Tables 4 and 5); ``from_pt`` looks one up."""

    PCMU = PayloadTypeSpec(0, 8000, "PCMU", frame_size=160)
    GSM = PayloadTypeSpec(3, 8000, "GSM", frame_size=160)
    G723 = PayloadTypeSpec(4, 8000, "G723", frame_size=160)
    DVI4_8K = PayloadTypeSpec(5, 8000, "DVI4", frame_size=160)
    DVI4_16K = PayloadTypeSpec(6, 16000, "DVI4", frame_size=320)
    LPC = PayloadTypeSpec(7, 8000, "LPC", frame_size=160)
    PCMA = PayloadTypeSpec(8, 8000, "PCMA", frame_size=160)
    #: RFC 3551 §4.5.2: the RTP clock rate of G.722 is 8000 although it samples at 16 kHz.
    G722 = PayloadTypeSpec(9, 8000, "G722", frame_size=160)
    L16_STEREO = PayloadTypeSpec(10, 44100, "L16", 2, frame_size=882)
    L16_MONO = PayloadTypeSpec(11, 44100, "L16", frame_size=882)
    QCELP = PayloadTypeSpec(12, 8000, "QCELP", frame_size=160)
    CN = PayloadTypeSpec(13, 8000, "CN", frame_size=160)
    MPA = PayloadTypeSpec(14, 90000, "MPA")
    G728 = PayloadTypeSpec(15, 8000, "G728", frame_size=160)
    DVI4_11K = PayloadTypeSpec(16, 11025, "DVI4", frame_size=220)
    DVI4_22K = PayloadTypeSpec(17, 22050, "DVI4", frame_size=441)
    G729 = PayloadTypeSpec(18, 8000, "G729", frame_size=160)
    CELB = PayloadTypeSpec(25, 90000, "CelB")
    JPEG = PayloadTypeSpec(26, 90000, "JPEG")
    NV = PayloadTypeSpec(28, 90000, "nv")
    H261 = PayloadTypeSpec(31, 90000, "H261")
    MPV = PayloadTypeSpec(32, 90000, "MPV")
    MP2T = PayloadTypeSpec(33, 90000, "MP2T")
    H263 = PayloadTypeSpec(34, 90000, "H263")

    @classmethod
    def from_pt(cls, pt: int) -> StaticPayloadType:
        """Look up a static payload type by its PT number (`ValueError` if none)."""
        try:
            return _STATIC_BY_PT[pt]
        except (KeyError, TypeError):
            raise ValueError(f"No static payload type with PT {pt}") from None


_STATIC_BY_PT: dict[int, StaticPayloadType] = {m.value.pt: m for m in StaticPayloadType}


@dataclasses.dataclass(slots=True)
class RTPPayloadFormat(ByteSerializableObject):
    """RTP payload format of an m= line (RFC 4566 §6 ``a=rtpmap``, RFC 3551 §6).

    Static payload types take their codec from `StaticPayloadType` unless an
    ``a=rtpmap`` says otherwise; dynamic ones (96-127) need an ``a=rtpmap``.
    ``fmtp`` is the ``a=fmtp`` parameter text, verbatim.  ``bytes()`` is the
    ``a=rtpmap`` value.
    """

    payload_type: int
    fmtp: str | None = None
    encoding_name: str | None = None
    channels: int = 1
    sample_rate: int | None = None

    def __post_init__(self) -> None:
        default = _STATIC_BY_PT.get(self.payload_type)
        if default is not None:
            spec = default.value
            self.sample_rate = self.sample_rate or spec.sample_rate
            self.encoding_name = self.encoding_name or spec.encoding_name
            self.channels = self.channels or spec.channels

    def __bytes__(self) -> bytes:
        base = f"{self.payload_type} {self.encoding_name}/{self.sample_rate}"
        if self.channels != 1:
            base = f"{base}/{self.channels}"
        return base.encode(ENCODING, _ERRORS)

    @classmethod
    def parse(cls, data: bytes | str) -> RTPPayloadFormat:
        """Parse an ``a=rtpmap`` value: ``<pt> <encoding>/<clock rate>[/<channels>]``."""
        value = _text(data)
        pt, _, rest = value.partition(" ")
        parts = rest.split("/")
        if not 2 <= len(parts) <= 3 or not parts[0] or parts[0].strip() != parts[0]:
            raise SDPParseError(f"Invalid rtpmap value: {_excerpt(value)}")
        return cls(
            payload_type=_uint(pt, "rtpmap payload type", 127),
            encoding_name=parts[0],
            sample_rate=_uint(parts[1], "rtpmap clock rate"),
            channels=_uint(parts[2], "rtpmap channels") if len(parts) > 2 else 1,
        )

    @classmethod
    def from_pt(cls, pt: int) -> RTPPayloadFormat:
        """Create an `RTPPayloadFormat` from a payload type number."""
        return cls(payload_type=pt)

    @property
    def frame_size(self) -> int:
        """Samples per 20 ms RTP frame: the static table's value, else ``sample_rate / 50``."""
        default = _STATIC_BY_PT.get(self.payload_type)
        if default is not None and default.value.frame_size:
            return default.value.frame_size
        return (self.sample_rate or 8000) * 20 // 1000


class SDESError(SDPParseError):
    """An ``a=crypto`` line is malformed, or asks for SDES we cannot do (RFC 4568).

    The message names the problem but never quotes the line: in a malformed line
    any token may be key material (issue 14 finding 12), so only names from the
    RFC registries (crypto-suites, session parameters) are ever shown.
    """


@dataclasses.dataclass(frozen=True)
class CryptoSuite:
    """An SRTP crypto-suite for SDES (RFC 4568 §6.2, RFC 7714 §12).

    ``profile`` is the suite's number in the IANA SRTP protection profile registry
    (RFC 5764 §4.1.2, RFC 7714 §14.2), which is also libsrtp's ``srtp_profile_t``.
    """

    name: str
    profile: int
    key_length: int
    salt_length: int
    #: Maximum SRTP master key lifetime in packets (RFC 4568 §6.2.1: 2^48).
    max_lifetime: int = 2**48

    @property
    def master_length(self) -> int:
        """Length of the ``inline:`` key||salt value once decoded."""
        return self.key_length + self.salt_length


#: Suites we offer and accept, in our order of preference for offers.
SUITES: dict[str, CryptoSuite] = {
    s.name: s
    for s in (
        CryptoSuite("AES_CM_128_HMAC_SHA1_80", 1, 16, 14),
        CryptoSuite("AES_CM_128_HMAC_SHA1_32", 2, 16, 14),
        CryptoSuite("AEAD_AES_128_GCM", 7, 16, 12),
    )
}
#: Registered SDES suite names (RFC 4568 §6.2, RFC 6188 §7, RFC 7714 §14.2): the only
#: suite text an error may quote, since a malformed line can carry a key where the
#: suite belongs.
_REGISTERED_SUITES = frozenset({
    *SUITES, "F8_128_HMAC_SHA1_80", "AES_192_CM_HMAC_SHA1_80", "AES_192_CM_HMAC_SHA1_32",
    "AES_256_CM_HMAC_SHA1_80", "AES_256_CM_HMAC_SHA1_32", "AEAD_AES_256_GCM",
})
#: SRTP session parameters of RFC 4568 §6.3 (the only ones an error may name).
_SESSION_PARAMS = frozenset({
    "KDR", "UNENCRYPTED_SRTP", "UNENCRYPTED_SRTCP", "UNAUTHENTICATED_SRTP", "FEC_ORDER",
    "FEC_KEY", "WSH",
})
#: Session parameters that do not change how we key or protect: WSH is only a hint.
_HARMLESS_SESSION_PARAMS = ("WSH=",)
#: Longest ``a=crypto`` value we key SRTP from (one inline key is ~70 characters).
_MAX_CRYPTO = 1024
_TAG_RE = re.compile(r"[0-9]{1,9}")
_LIFETIME_RE = re.compile(r"2\^([0-9]{1,3})|([0-9]{1,20})")


@dataclasses.dataclass(slots=True, frozen=True)
class CryptoKeyParam:
    """One key-param of an ``a=crypto`` line (RFC 4568 §9.1, ``inline:`` method §6.1).

    ``key_salt`` is the base64 master key||salt; it is never shown in ``repr``.
    ``lifetime`` (e.g. ``"2^20"``) and ``mki`` (``"<value>:<length>"``) are optional.
    """

    method: str
    key_salt: str = dataclasses.field(repr=False)
    lifetime: str | None = None
    mki: str | None = None

    @property
    def key_salt_bytes(self) -> bytes:
        """The decoded master key||salt (`SDESError` if it is not valid base64)."""
        try:
            return base64.b64decode(self.key_salt, validate=True)
        except (binascii.Error, ValueError):
            raise SDESError("a=crypto: key is not valid base64") from None

    def __str__(self) -> str:
        text = f"{self.method}:{self.key_salt}"
        if self.lifetime is not None:
            text += f"|{self.lifetime}"
        if self.mki is not None:
            text += f"|{self.mki}"
        return text


def _suite_text(name: str) -> str:
    """*name* for an error message if it is a registered suite name, else nothing of it."""
    return name if name in _REGISTERED_SUITES else "(unknown)"


def _lifetime(text: str, suite: CryptoSuite) -> int:
    """RFC 4568 §9.1 lifetime: ``2^n`` or a decimal count of packets, within the suite's."""
    match = _LIFETIME_RE.fullmatch(text)
    if match is None:
        raise SDESError("a=crypto: malformed key lifetime")
    value = 2 ** int(match.group(1)) if match.group(1) else int(match.group(2))
    if value <= 0 or value > suite.max_lifetime:
        raise SDESError(f"a=crypto: key lifetime outside 1..2^48 for {suite.name}")
    return value


@dataclasses.dataclass(slots=True, frozen=True)
class CryptoAttribute:
    """An ``a=crypto`` value: ``<tag> <crypto-suite> <key-params> [<session-params>]``.

    RFC 4568 §9.1.  :meth:`parse` reads any line of that grammar (the attribute
    itself stays verbatim in `MediaDescription.attributes`); :meth:`parse_supported`
    also checks it is one we can key SRTP with, which is what offer/answer needs.
    ``str()`` / :meth:`to_sdp` give the value back *with the key*: never log it
    (use :func:`redact_sdp`).  ``repr`` and every error leave key material out.
    """

    tag: int
    suite: str
    key_params: tuple[CryptoKeyParam, ...]
    session_params: tuple[str, ...] = ()

    @classmethod
    def parse(cls, data: bytes | str) -> CryptoAttribute:
        """Parse an ``a=crypto`` value (without ``crypto:``); `SDESError` if malformed."""
        value = _text(data)
        parts = value.split()
        if len(parts) < 3:
            raise SDESError("a=crypto must be '<tag> <crypto-suite> <key-params> ...'")
        if not _TAG_RE.fullmatch(parts[0]):
            raise SDESError("a=crypto tag must be 1-9 digits")
        params = []
        for param in parts[2].split(";"):
            method, colon, info = param.partition(":")
            if not colon or not method or not info:
                raise SDESError("a=crypto key-param must be '<method>:<key-info>'")
            key_salt, *extra = info.split("|")
            if len(extra) > 2 or not key_salt:
                raise SDESError("a=crypto key-info has too many '|' fields")
            lifetime = mki = None
            for item in extra:
                if ":" in item:
                    if mki is not None:
                        raise SDESError("a=crypto key-info has two MKIs")
                    mki = item
                else:
                    if lifetime is not None:
                        raise SDESError("a=crypto: lifetime given twice")
                    lifetime = item
            params.append(CryptoKeyParam(method, key_salt, lifetime, mki))
        return cls(int(parts[0]), parts[1], tuple(params), tuple(parts[3:]))

    @classmethod
    def parse_supported(cls, data: bytes | str) -> CryptoAttribute:
        """Parse an ``a=crypto`` value and check we can key SRTP with it.

        Raises `SDESError` for malformed lines and for what SDES through libsrtp
        cannot honour: a suite not in :data:`SUITES`, a method other than
        ``inline:`` (RFC 4568 §6.1), several keys or an MKI (libsrtp through
        pylibsrtp cannot select keys by MKI), a key of the wrong length, a
        lifetime over the suite's, and session parameters other than WSH
        (RFC 4568 §6.3: a line with one we do not support is unusable).
        """
        if len(data) > _MAX_CRYPTO:
            raise SDESError("a=crypto: value too long")
        crypto = cls.parse(data)
        suite = SUITES.get(crypto.suite)
        if suite is None:
            raise SDESError(f"a=crypto: unsupported crypto-suite {_suite_text(crypto.suite)}")
        for param in crypto.session_params:
            if not param.startswith(_HARMLESS_SESSION_PARAMS):
                name = param.partition("=")[0]
                shown = name if name in _SESSION_PARAMS else "(unknown)"
                raise SDESError(f"a=crypto: unsupported session parameter {shown}")
        if len(crypto.key_params) != 1:
            raise SDESError("a=crypto: multiple master keys (needs MKI) are not supported")
        (key,) = crypto.key_params
        if key.method != "inline":
            raise SDESError("a=crypto: only the 'inline:' key method is supported")
        if key.mki is not None:
            raise SDESError("a=crypto: MKI is not supported")
        master = key.key_salt_bytes
        if len(master) != suite.master_length:
            raise SDESError(
                f"a=crypto: {suite.name} needs {suite.master_length} bytes of key||salt,"
                f" got {len(master)}"
            )
        if key.lifetime is not None:
            _lifetime(key.lifetime, suite)
        return crypto

    @classmethod
    def generate(cls, tag: int = 1, suite: str = "AES_CM_128_HMAC_SHA1_80") -> CryptoAttribute:
        """A fresh random master key and salt (RFC 4568 §6.1: keys MUST be random)."""
        spec = SUITES[suite]
        key = base64.b64encode(secrets.token_bytes(spec.master_length)).decode("ascii")
        return cls(tag, suite, (CryptoKeyParam("inline", key),))

    @property
    def crypto_suite(self) -> CryptoSuite:
        """The suite's key and salt lengths and profile (`SDESError` if not in :data:`SUITES`)."""
        suite = SUITES.get(self.suite)
        if suite is None:
            raise SDESError(f"a=crypto: unsupported crypto-suite {_suite_text(self.suite)}")
        return suite

    @property
    def master(self) -> bytes:
        """The master key||salt of the line's one key (`SDESError` unless it has exactly one)."""
        if len(self.key_params) != 1:
            raise SDESError("a=crypto: multiple master keys (needs MKI) are not supported")
        return self.key_params[0].key_salt_bytes

    @property
    def lifetime(self) -> int | None:
        """The key's lifetime in packets (RFC 4568 §9.1), or None when not given."""
        text = self.key_params[0].lifetime if len(self.key_params) == 1 else None
        return None if text is None else _lifetime(text, self.crypto_suite)

    def to_sdp(self) -> str:
        """The attribute value, ready for ``a=crypto:`` (contains the key: never log it)."""
        return str(self)

    def __str__(self) -> str:
        text = f"{self.tag} {self.suite} {';'.join(str(p) for p in self.key_params)}"
        return " ".join([text, *self.session_params])

    def __repr__(self) -> str:
        return (
            f"<CryptoAttribute tag={self.tag} suite={_suite_text(self.suite)}"
            f" keys={len(self.key_params)} <redacted>>"
        )


_INLINE_RE = re.compile(rb"inline:[A-Za-z0-9+/=]*")


def redact_sdp(data: bytes) -> bytes:
    """Return *data* with every ``inline:`` key replaced, for logging (RFC 4568 §8.1)."""
    return _INLINE_RE.sub(b"inline:<redacted>", data)


def _is_rtp(proto: str) -> bool:
    """RFC 4566 §5.14: RTP profiles (``RTP/AVP``, ``UDP/TLS/RTP/SAVPF``) list payload types."""
    return "RTP" in proto.split("/")


def direction_of(attributes: Iterable[Attribute]) -> str | None:
    """The direction attribute among *attributes* (RFC 4566 §6), or None if there is none."""
    found = None
    for attribute in attributes:
        if attribute.value is None and attribute.name in DIRECTIONS:
            found = attribute.name
    return found


def set_direction(attributes: list[Attribute], direction: str | None) -> None:
    """Replace the direction attribute in place (keeping its position), add or remove it."""
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    positions = [
        i for i, a in enumerate(attributes) if a.value is None and a.name in DIRECTIONS
    ]
    for i in reversed(positions[1:]):
        del attributes[i]
    if direction is None:
        if positions:
            del attributes[positions[0]]
    elif positions:
        attributes[positions[0]] = Attribute(direction)
    else:
        attributes.append(Attribute(direction))


# --- layout: remembering line order and exact text ---------------------------------------
#
# A layout is a list of (key, snapshot, raw) tuples in input order.  Rendering builds the
# canonical items of the current object, each (key, kind, rank, value, text); an item whose
# key is in the layout is written at the layout position, as the raw input text if its value
# still equals the snapshot.  New items go after the last item of the same kind, else after
# the last item of a lower rank.  ``text``/``raw`` of None means "write no line".

LayoutEntry = tuple[tuple[Any, ...], Any, str | None]
Item = tuple[tuple[Any, ...], str, int, Any, str | None]


def list_keys(kind: str, values: Iterable[Any]) -> list[tuple[Any, ...]]:
    """Keys for list elements: equal values are told apart by their occurrence count."""
    seen: dict[Any, int] = {}
    keys = []
    for value in values:
        count = seen.get(value, 0)
        seen[value] = count + 1
        keys.append((kind, value, count))
    return keys


def render_layout(items: list[Item], layout: list[LayoutEntry] | None) -> list[str]:
    """The lines of *items* in the order *layout* recorded at parse time (else item order)."""
    if layout is None:
        return [item[4] for item in items if item[4] is not None]
    by_key = {item[0]: item for item in items}
    layout_keys = {entry[0] for entry in layout}
    by_kind: dict[Any, list[Item]] = {}
    for item in items:
        if len(item[0]) == 3:
            by_kind.setdefault(item[0][0], []).append(item)
    ordinals: dict[Any, int] = {}
    out: list[tuple[str, int, str | None]] = []
    used: set[tuple[Any, ...]] = set()
    for key, snapshot, raw in layout:
        item = by_key.get(key)
        if len(key) == 3:
            # A replaced list element (e.g. a=sendrecv -> a=recvonly) keeps its line's place.
            ordinal = ordinals.get(key[0], 0)
            ordinals[key[0]] = ordinal + 1
            same_kind = by_kind.get(key[0], [])
            if item is None and ordinal < len(same_kind):
                candidate = same_kind[ordinal]
                if candidate[0] not in layout_keys and candidate[0] not in used:
                    item = candidate
        if item is None or item[0] in used:
            continue
        key = item[0]
        used.add(key)
        out.append((item[1], item[2], raw if item[3] == snapshot else item[4]))
    for key, kind, rank, _value, text in items:
        if key in used:
            continue
        out.insert(_insert_position(out, kind, rank), (kind, rank, text))
    return [text for _kind, _rank, text in out if text is not None]


def _insert_position(out: list[tuple[str, int, str | None]], kind: str, rank: int) -> int:
    for i in range(len(out) - 1, -1, -1):
        if out[i][0] == kind:
            return i + 1
    for i in range(len(out) - 1, -1, -1):
        if out[i][1] <= rank:
            return i + 1
    return 0


def line_error(lineno: int, letter: str, value: str, error: Exception) -> SDPParseError:
    """Wrap *error* with the line number, showing the line unless it may hold a secret."""
    if letter in ("a", "k"):
        return SDPParseError(f"line {lineno} ({letter}=...): {error}")
    return SDPParseError(f"line {lineno} {_excerpt(f'{letter}={value}')}: {error}")


@dataclasses.dataclass(slots=True)
class MediaDescription(ByteSerializableObject):
    """Media description (``m=`` section), RFC 4566 §5.14.

    For RTP profiles ``fmt`` lists the payload types of the m= line, with their
    ``a=rtpmap``/``a=fmtp`` folded in; other protocols (``UDP/DTLS/SCTP``,
    ``udptl``) keep their format tokens in ``formats``.  ``port_count`` is the
    optional ``/<number of ports>`` of the m= line; ``key`` a media-level ``k=``.
    """

    letter: ClassVar[str] = "m"
    session_attr: ClassVar[str] = "media"
    is_list: ClassVar[bool] = True
    media_attr: ClassVar[str | None] = None

    media: str
    port: int
    proto: str
    fmt: list[RTPPayloadFormat] = dataclasses.field(default_factory=list)
    title: str | None = None
    connection: ConnectionData | None = None
    bandwidths: list[Bandwidth] = dataclasses.field(default_factory=list)
    attributes: list[Attribute] = dataclasses.field(default_factory=list)
    port_count: int | None = None
    key: str | None = dataclasses.field(default=None, repr=False)
    formats: list[str] = dataclasses.field(default_factory=list)
    _layout: list[LayoutEntry] | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )

    _RANKS: ClassVar[dict[str, int]] = {
        "m": 0, "i": 1, "c": 2, "b": 3, "k": 4, "rtpmap": 5, "a": 6,
    }

    def get_format(self, pt: int | str) -> RTPPayloadFormat | None:
        """Return the `RTPPayloadFormat` for payload type *pt*, or ``None``."""
        try:
            target = int(pt)
        except ValueError:
            return None
        return next((f for f in self.fmt if f.payload_type == target), None)

    def apply_attribute(self, attr: Attribute) -> bool:
        """Fold an ``a=rtpmap``/``a=fmtp`` attribute into ``fmt``; ``True`` if consumed.

        Returns ``False`` (the caller keeps the attribute) for other attributes,
        malformed values, or a payload type that is not on the m= line.
        """
        if attr.value is None:
            return False
        if attr.name == "rtpmap":
            try:
                parsed = RTPPayloadFormat.parse(attr.value)
            except SDPParseError:
                return False
            target = self.get_format(parsed.payload_type)
            if target is None:
                return False
            target.encoding_name = parsed.encoding_name
            target.sample_rate = parsed.sample_rate
            target.channels = parsed.channels
            return True
        if attr.name == "fmtp":
            pt, _, params = attr.value.partition(" ")
            target = self.get_format(pt) if _UINT.fullmatch(pt) else None
            if target is None:
                return False
            target.fmtp = params
            return True
        return False

    def get_attribute(self, name: str) -> Attribute | None:
        """The first attribute called *name* (rtpmap/fmtp are folded into ``fmt``)."""
        return next((a for a in self.attributes if a.name == name), None)

    def get_attributes(self, name: str) -> list[Attribute]:
        """All attributes called *name*, in order."""
        return [a for a in self.attributes if a.name == name]

    @property
    def direction(self) -> str | None:
        """This section's own direction attribute (RFC 3264 §5.1), ``None`` if absent.

        Use `SessionDescription.media_direction` for the effective direction
        (media level overrides session level; the default is ``sendrecv``).
        """
        return direction_of(self.attributes)

    @direction.setter
    def direction(self, value: str | None) -> None:
        set_direction(self.attributes, value)

    @property
    def ptime(self) -> int | None:
        """``a=ptime`` in milliseconds (RFC 4566 §6), ``None`` if absent or malformed."""
        attribute = self.get_attribute("ptime")
        if attribute is None or attribute.value is None:
            return None
        value = attribute.value.strip()
        return int(value) if _UINT.fullmatch(value) else None

    @property
    def rtcp_mux(self) -> bool:
        """Whether ``a=rtcp-mux`` (RFC 5761 §5.1.1) is present."""
        return self.get_attribute("rtcp-mux") is not None

    @property
    def rtcp_port(self) -> int | None:
        """The port of ``a=rtcp:<port> [...]`` (RFC 3605 §2.1), ``None`` if absent or malformed."""
        attribute = self.get_attribute("rtcp")
        if attribute is None or attribute.value is None:
            return None
        port = attribute.value.split(" ", 1)[0]
        return int(port) if _UINT.fullmatch(port) and int(port) <= 65535 else None

    @property
    def crypto(self) -> list[CryptoAttribute]:
        """The well-formed ``a=crypto`` lines (RFC 4568 §9.1), in order; malformed ones skipped."""
        result = []
        for attribute in self.get_attributes("crypto"):
            try:
                result.append(CryptoAttribute.parse(attribute.value or ""))
            except SDPParseError:
                continue
        return result

    def _m_value(self) -> tuple[Any, ...]:
        tokens = (
            tuple(f.payload_type for f in self.fmt) if self.fmt else tuple(self.formats)
        )
        return (self.media, self.port, self.port_count, self.proto, tokens)

    def _items(self) -> list[Item]:
        ranks = self._RANKS
        media, port, port_count, proto, tokens = self._m_value()
        port_text = f"{port}/{port_count}" if port_count is not None else str(port)
        m_text = " ".join([f"m={media} {port_text} {proto}", *map(str, tokens)])
        items: list[Item] = [(("m",), "m", 0, self._m_value(), m_text)]
        if self.title is not None:
            items.append((("i",), "i", ranks["i"], self.title, f"i={self.title}"))
        if self.connection is not None:
            items.append((("c",), "c", ranks["c"], self.connection, f"c={self.connection}"))
        for key, bw in zip(list_keys("b", self.bandwidths), self.bandwidths, strict=True):
            items.append((key, "b", ranks["b"], bw, f"b={bw}"))
        if self.key is not None:
            items.append((("k",), "k", ranks["k"], self.key, f"k={self.key}"))
        seen: set[int] = set()
        for f in self.fmt:
            if f.payload_type in seen:
                continue
            seen.add(f.payload_type)
            if f.encoding_name is not None and f.sample_rate is not None:
                rtpmap = (f.encoding_name, f.sample_rate, f.channels)
                key = ("rtpmap", f.payload_type)
                items.append((key, "rtpmap", ranks["rtpmap"], rtpmap, f"a=rtpmap:{f}"))
            if f.fmtp is not None:
                text = f"a=fmtp:{f.payload_type} {f.fmtp}"
                items.append((("fmtp", f.payload_type), "rtpmap", ranks["rtpmap"], f.fmtp, text))
        for key, attr in zip(list_keys("a", self.attributes), self.attributes, strict=True):
            items.append((key, "a", ranks["a"], attr, f"a={attr}"))
        return items

    def _lines(self) -> list[str]:
        """The section's lines: in input order and text when parsed, else RFC 4566 order."""
        return render_layout(self._items(), self._layout)

    def __bytes__(self) -> bytes:
        return "\r\n".join(self._lines()).encode(ENCODING, _ERRORS)

    @classmethod
    def parse(cls, data: bytes | str) -> MediaDescription:
        """Parse one media section (the ``m=`` line and the lines after it)."""
        lines = _text(data).split("\n")
        numbered = []
        for lineno, line in enumerate(lines, 1):
            line = line.removesuffix("\r")
            if "\r" in line or "\x00" in line:
                raise SDPParseError(f"line {lineno}: bare CR or NUL inside a line")
            if line or lineno < len(lines):
                numbered.append((lineno, *split_line(lineno, line)))
        if not numbered or numbered[0][1] != "m":
            raise SDPParseError("a media description must start with an m= line")
        return cls._from_lines(numbered)

    @classmethod
    def _from_lines(cls, lines: list[tuple[int, str, str]]) -> MediaDescription:
        """Build from ``(lineno, letter, value)`` tuples whose first is the m= line."""
        lineno, letter, value = lines[0]
        try:
            media = cls._parse_m_line(value)
        except SDPParseError as error:
            raise line_error(lineno, letter, value, error) from None
        by_pt: dict[int, RTPPayloadFormat] = {}
        for f in media.fmt:
            by_pt.setdefault(f.payload_type, f)
        entries: list[tuple[str, Any, str]] = [("m", media._m_value(), f"m={value}")]
        folded_rtpmap: set[int] = set()
        folded_fmtp: set[int] = set()
        for lineno, letter, value in lines[1:]:
            raw = f"{letter}={value}"
            try:
                if letter == "a":
                    attr = Attribute.parse(value)
                    kind = media._fold(attr, by_pt, folded_rtpmap, folded_fmtp)
                    if kind is not None:
                        pt, snapshot = kind
                        entries.append((f"{attr.name}:{pt}", snapshot, raw))
                        continue
                    media.attributes.append(attr)
                    entries.append(("a", attr, raw))
                elif letter == "b":
                    bandwidth = Bandwidth.parse(value)
                    media.bandwidths.append(bandwidth)
                    entries.append(("b", bandwidth, raw))
                elif letter in ("i", "c", "k"):
                    attribute = {"i": "title", "c": "connection", "k": "key"}[letter]
                    if getattr(media, attribute) is not None:
                        raise SDPParseError(f"more than one {letter}= line in a media description")
                    parsed = ConnectionData.parse(value) if letter == "c" else value
                    setattr(media, attribute, parsed)
                    entries.append((letter, parsed, raw))
                elif letter == "m":
                    raise SDPParseError("a media description has only one m= line")
                elif letter in _SESSION_ONLY:
                    raise SDPParseError(f"{letter}= is not allowed in a media description")
                else:
                    raise SDPParseError(unknown_letter(letter))
            except SDPParseError as error:
                raise line_error(lineno, letter, value, error) from None
        layout: list[LayoutEntry] = [((kind,), snap, raw) for kind, snap, raw in entries[:1]]
        for pt, f in by_pt.items():
            if pt not in folded_rtpmap and f.encoding_name is not None:
                layout.append(
                    (("rtpmap", pt), (f.encoding_name, f.sample_rate, f.channels), None)
                )
        layout.extend(layout_entries(entries[1:]))
        media._layout = layout
        return media

    def _fold(
        self,
        attr: Attribute,
        by_pt: dict[int, RTPPayloadFormat],
        folded_rtpmap: set[int],
        folded_fmtp: set[int],
    ) -> tuple[int, Any] | None:
        """Fold the first rtpmap/fmtp of each listed payload type; others stay attributes."""
        if attr.value is None or not self.fmt:
            return None
        if attr.name == "rtpmap":
            try:
                parsed = RTPPayloadFormat.parse(attr.value)
            except SDPParseError:
                return None
            pt = parsed.payload_type
            if pt not in by_pt or pt in folded_rtpmap:
                return None
            target = by_pt[pt]
            target.encoding_name = parsed.encoding_name
            target.sample_rate = parsed.sample_rate
            target.channels = parsed.channels
            folded_rtpmap.add(pt)
            return pt, (parsed.encoding_name, parsed.sample_rate, parsed.channels)
        if attr.name == "fmtp":
            pt_text, _, params = attr.value.partition(" ")
            if not _UINT.fullmatch(pt_text):
                return None
            pt = int(pt_text)
            if pt not in by_pt or pt in folded_fmtp:
                return None
            by_pt[pt].fmtp = params
            folded_fmtp.add(pt)
            return pt, params
        return None

    @classmethod
    def _parse_m_line(cls, value: str) -> MediaDescription:
        parts = value.split()
        if len(parts) < 4:
            raise SDPParseError("m= must be '<media> <port>[/<count>] <proto> <fmt> ...'")
        media, port_text, proto, *tokens = parts
        port_part, slash, count_part = port_text.partition("/")
        port = _uint(port_part, "m= port", 65535)
        port_count = _uint(count_part, "m= number of ports", 65535) if slash else None
        if not _is_rtp(proto):
            return cls(media, port, proto, port_count=port_count, formats=tokens)
        fmt = [
            RTPPayloadFormat.from_pt(_uint(token, "m= RTP payload type", 127))
            for token in tokens
        ]
        return cls(media, port, proto, fmt, port_count=port_count)


_SESSION_ONLY = frozenset("vosuepzrt")


def unknown_letter(letter: str) -> str:
    """The note recorded for a line type the parser ignores (RFC 4566 §5)."""
    return (
        f"unknown line type {letter!r}: RFC 4566 §5 says a description with a type letter"
        " the parser does not understand must be ignored"
    )


def split_line(lineno: int, line: str) -> tuple[str, str]:
    """Split ``<type>=<value>`` (RFC 4566 §5: one letter, no spaces around ``=``)."""
    if len(line) >= 2 and line[1] == "=":
        return line[0], line[2:]
    if "=" not in line:
        raise SDPParseError(f"line {lineno} {_excerpt(line)}: not '<type>=<value>' (no '=')")
    raise SDPParseError(
        f"line {lineno} {_excerpt(line)}: the type must be one letter directly followed by '='"
    )


def layout_entries(entries: Iterable[tuple[str, Any, str | None]]) -> list[LayoutEntry]:
    """Turn ``(kind, value, raw)`` in input order into layout entries with render keys.

    List kinds (a b e p t) are keyed by value and occurrence; ``rtpmap:<pt>`` and
    ``fmtp:<pt>`` by payload type; single fields by their letter.
    """
    counts: dict[tuple[str, Any], int] = {}
    layout: list[LayoutEntry] = []
    for kind, value, raw in entries:
        if kind in ("a", "b", "e", "p", "t"):
            count = counts.get((kind, value), 0)
            counts[(kind, value)] = count + 1
            layout.append(((kind, value, count), value, raw))
        elif ":" in kind:
            name, _, pt = kind.partition(":")
            layout.append(((name, int(pt)), value, raw))
        else:
            layout.append(((kind,), value, raw))
    return layout

