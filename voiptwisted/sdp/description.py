"""`SessionDescription`: a whole SDP body (RFC 4566 §5), parsed and serialised line for line.

Parsing rules (decided here, pinned by tests):

- Lines end in CRLF or LF; ``bytes()`` always writes CRLF (RFC 4566 §5) and ends
  with CRLF.  Empty lines at the very end are dropped; anywhere else they are errors.
- ``v=0`` must be the first line; ``o=``, ``s=`` and at least one ``t=`` are required
  (RFC 4566 §5).  Single fields (``o= s= i= u= c= z= k=``) may appear once per level.
- Known lines that are out of the RFC 4566 §5 order within their section are
  tolerated and written back where they were; lines that may only appear at session
  level (``o= s= u= e= p= t= r= z=``) are errors inside a media section, and ``r=``
  must directly follow ``t=`` or ``r=``.
- An unknown type letter is an error: RFC 4566 §5 says a parser MUST ignore a
  description containing a type letter it does not understand.
- Not enforced here (offer/answer checks them): that every media section has a
  ``c=`` of its own or from the session (RFC 4566 §5.7); a second ``c=`` in one
  media section (RFC 4566 allows several for multicast layers) is refused.
- Malformed ``a=rtpmap``/``a=fmtp`` values, and ones for payload types not on the
  m= line or repeated, are kept as plain attributes (attributes are extensible).
- Sizes are bounded: more than `MAX_SIZE` bytes or `MAX_MEDIA` m= sections is an error.
- Any problem raises `SDPParseError` naming the line number; the text of ``a=`` and
  ``k=`` lines is not quoted because it may carry keys (RFC 4568) or ICE passwords.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterable
from typing import Any

from voiptwisted.sdp.types import (
    ENCODING,
    Attribute,
    Bandwidth,
    ConnectionData,
    IntField,
    Item,
    LayoutEntry,
    MediaDescription,
    Origin,
    SDPParseError,
    StrField,
    Timing,
    direction_of,
    ip_literal,
    layout_entries,
    line_error,
    list_keys,
    render_layout,
    set_direction,
    split_line,
    unknown_letter,
)

__all__ = ["MAX_MEDIA", "MAX_SIZE", "SessionDescription"]

#: Largest SDP body accepted, in bytes (characters for ``str`` input).
MAX_SIZE = 64 * 1024
#: Most m= sections accepted.
MAX_MEDIA = 64

#: Session-level single-valued text fields: letter -> attribute of `SessionDescription`.
_SINGLE_TEXT = {
    "s": StrField("s", "name"),
    "i": StrField("i", "info", media_attr="title"),
    "u": StrField("u", "uri"),
    "z": StrField("z", "zone"),
    "k": StrField("k", "key", media_attr="key"),
}
_LIST_TEXT = {"e": StrField("e", "emails", True), "p": StrField("p", "phones", True)}
_VERSION = IntField("v", "version")
_RANKS = {letter: rank for rank, letter in enumerate("vosiuepcbtzka")}


def _default_origin() -> Origin:
    return Origin("-", "0", "0", "IN", "IP4", "127.0.0.1")


def _addrtype(host: str) -> str:
    """``IP6`` for an IPv6 literal (RFC 4566 §5.7), else ``IP4``."""
    address = ip_literal(host)
    if address is None:
        return "IP6" if ":" in host else "IP4"
    return "IP6" if address.version == 6 else "IP4"


@dataclasses.dataclass(slots=True)
class SessionDescription:
    """A session description (RFC 4566 §5).

    Construct with keyword arguments (defaults ``v=0``, ``s=-``, ``t=0 0``), with
    `create`, or with `parse`.  ``bytes(sd)`` serialises: a parsed description
    comes back line for line; changed or new parts are written in RFC 4566 order.
    Equality ignores the remembered line layout.
    """

    version: int = 0
    origin: Origin = dataclasses.field(default_factory=_default_origin)
    name: str = "-"
    info: str | None = None
    uri: str | None = None
    emails: list[str] = dataclasses.field(default_factory=list)
    phones: list[str] = dataclasses.field(default_factory=list)
    connection: ConnectionData | None = None
    bandwidths: list[Bandwidth] = dataclasses.field(default_factory=list)
    timings: list[Timing] = dataclasses.field(default_factory=lambda: [Timing(0, 0)])
    zone: str | None = None
    key: str | None = dataclasses.field(default=None, repr=False)
    attributes: list[Attribute] = dataclasses.field(default_factory=list)
    media: list[MediaDescription] = dataclasses.field(default_factory=list)
    _layout: list[LayoutEntry] | None = dataclasses.field(
        default=None, init=False, repr=False, compare=False
    )

    @classmethod
    def create(
        cls,
        origin_host: str,
        connection_host: str | None = None,
        media: Iterable[MediaDescription] = (),
        *,
        username: str = "-",
        session_id: int | None = None,
        session_version: int = 0,
        name: str = "-",
        attributes: Iterable[Attribute] = (),
    ) -> SessionDescription:
        """Build a description for offer/answer (RFC 3264 §5).

        The session id is random unless given (RFC 4566 §5.2 only asks that it be
        unique); ``c=`` is at session level and uses ``IP6`` for IPv6 hosts.
        """
        if session_id is None:
            session_id = secrets.randbits(62)
        origin = Origin(
            username, str(session_id), str(session_version), "IN", _addrtype(origin_host),
            origin_host,
        )
        host = connection_host if connection_host is not None else origin_host
        return cls(
            origin=origin,
            name=name,
            connection=ConnectionData("IN", _addrtype(host), host),
            attributes=list(attributes),
            media=list(media),
        )

    # -- attribute helpers ----------------------------------------------------------------

    def get_attribute(self, name: str) -> Attribute | None:
        """The first session-level attribute called *name*, or ``None``."""
        return next((a for a in self.attributes if a.name == name), None)

    def get_attributes(self, name: str) -> list[Attribute]:
        """All session-level attributes called *name*, in order."""
        return [a for a in self.attributes if a.name == name]

    @property
    def direction(self) -> str:
        """Session-level direction (RFC 4566 §6); ``sendrecv`` if none (RFC 3264 §5.1)."""
        return direction_of(self.attributes) or "sendrecv"

    @direction.setter
    def direction(self, value: str | None) -> None:
        set_direction(self.attributes, value)

    def media_direction(self, media: MediaDescription) -> str:
        """The effective direction of *media*: its own attribute overrides the session's."""
        return media.direction or self.direction

    def media_connection(self, media: MediaDescription) -> ConnectionData | None:
        """The effective ``c=`` of *media*: its own, else the session's (RFC 4566 §5.7)."""
        return media.connection or self.connection

    # -- serialisation --------------------------------------------------------------------

    def _items(self) -> list[Item]:
        ranks = _RANKS
        items: list[Item] = [
            (("v",), "v", 0, self.version, f"v={self.version}"),
            (("o",), "o", ranks["o"], self.origin, f"o={self.origin}"),
            (("s",), "s", ranks["s"], self.name, f"s={self.name}"),
        ]
        for letter in ("i", "u"):
            value = getattr(self, _SINGLE_TEXT[letter].session_attr)
            if value is not None:
                items.append(((letter,), letter, ranks[letter], value, f"{letter}={value}"))
        for letter, values in (("e", self.emails), ("p", self.phones)):
            for key, value in zip(list_keys(letter, values), values, strict=True):
                items.append((key, letter, ranks[letter], value, f"{letter}={value}"))
        if self.connection is not None:
            items.append((("c",), "c", ranks["c"], self.connection, f"c={self.connection}"))
        for key, bw in zip(list_keys("b", self.bandwidths), self.bandwidths, strict=True):
            items.append((key, "b", ranks["b"], bw, f"b={bw}"))
        for key, timing in zip(list_keys("t", self.timings), self.timings, strict=True):
            text = "\r\n".join([f"t={timing}", *(f"r={r}" for r in timing.repeats)])
            items.append((key, "t", ranks["t"], timing, text))
        for letter in ("z", "k"):
            value = getattr(self, _SINGLE_TEXT[letter].session_attr)
            if value is not None:
                items.append(((letter,), letter, ranks[letter], value, f"{letter}={value}"))
        for key, attr in zip(list_keys("a", self.attributes), self.attributes, strict=True):
            items.append((key, "a", ranks["a"], attr, f"a={attr}"))
        return items

    def __bytes__(self) -> bytes:
        lines = render_layout(self._items(), self._layout)
        for media in self.media:
            lines.extend(media._lines())
        return ("\r\n".join(lines) + "\r\n").encode(ENCODING, "surrogateescape")

    def __str__(self) -> str:
        return bytes(self).decode(ENCODING, "surrogateescape")

    # -- parsing --------------------------------------------------------------------------

    @classmethod
    def parse(cls, data: bytes | str) -> SessionDescription:
        """Parse an SDP body; raises only `SDPParseError` (see the module docstring)."""
        if len(data) > MAX_SIZE:
            raise SDPParseError(f"SDP is {len(data)} bytes, more than the limit {MAX_SIZE}")
        text = (
            data
            if isinstance(data, str)
            else bytes(data).decode(ENCODING, "surrogateescape")
        )
        if "\x00" in text:
            raise SDPParseError("SDP contains a NUL character (RFC 4566 §9 text excludes it)")
        lines = text.split("\n")
        while lines and lines[-1] in ("", "\r"):
            lines.pop()
        if not lines:
            raise SDPParseError("SDP is empty (RFC 4566 §5 requires v=, o=, s=, t=)")
        numbered: list[tuple[int, str, str]] = []
        media_count = 0
        for lineno, line in enumerate(lines, 1):
            line = line.removesuffix("\r")
            if "\r" in line:
                raise SDPParseError(f"line {lineno}: bare CR inside a line")
            letter, value = split_line(lineno, line)
            if letter == "m":
                media_count += 1
                if media_count > MAX_MEDIA:
                    raise SDPParseError(
                        f"line {lineno}: more than {MAX_MEDIA} m= sections"
                    )
            numbered.append((lineno, letter, value))
        if numbered[0][1] != "v":
            raise SDPParseError("line 1: SDP must start with a v= line (RFC 4566 §5)")
        starts = [i for i, (_, letter, _) in enumerate(numbered) if letter == "m"]
        session_end = starts[0] if starts else len(numbered)
        description = cls._parse_session(numbered[:session_end])
        for begin, end in zip(starts, [*starts[1:], len(numbered)], strict=False):
            description.media.append(MediaDescription._from_lines(numbered[begin:end]))
        return description

    @classmethod
    def _parse_session(cls, lines: list[tuple[int, str, str]]) -> SessionDescription:
        fields: dict[str, Any] = {
            "emails": [], "phones": [], "bandwidths": [], "timings": [], "attributes": [],
        }
        entries: list[list[Any]] = []
        previous = ""
        for lineno, letter, value in lines:
            raw = f"{letter}={value}"
            try:
                if letter == "a":
                    attr = Attribute.parse(value)
                    fields["attributes"].append(attr)
                    entries.append(["a", attr, raw])
                elif letter == "b":
                    bandwidth = Bandwidth.parse(value)
                    fields["bandwidths"].append(bandwidth)
                    entries.append(["b", bandwidth, raw])
                elif letter == "t":
                    timing = Timing.parse(value)
                    fields["timings"].append(timing)
                    entries.append(["t", timing, raw])
                elif letter == "r":
                    if previous not in ("t", "r"):
                        raise SDPParseError("r= must directly follow t= (RFC 4566 §5.10)")
                    entries[-1].append(value)  # collected on the t= entry, see below
                elif letter in _LIST_TEXT:
                    fields[_LIST_TEXT[letter].session_attr].append(value)
                    entries.append([letter, value, raw])
                elif letter in ("v", "o", "c") or letter in _SINGLE_TEXT:
                    name, parsed = cls._parse_single(letter, value)
                    if name in fields:
                        raise SDPParseError(f"more than one {letter}= line at session level")
                    fields[name] = parsed
                    entries.append([letter, parsed, raw])
                else:
                    raise SDPParseError(unknown_letter(letter))
            except SDPParseError as error:
                raise line_error(lineno, letter, value, error) from None
            previous = letter
        # Each t= gets its r= values once, at the end: growing the Timing and its text per
        # r= line was quadratic in their number (issue 14 finding 3 audit).
        timing_entries = [entry for entry in entries if entry[0] == "t"]
        for index, entry in enumerate(timing_entries):
            repeats = entry[3:]
            if repeats:
                del entry[3:]
                timing = dataclasses.replace(entry[1], repeats=tuple(repeats))
                entry[1] = fields["timings"][index] = timing
                entry[2] = "\r\n".join([entry[2], *(f"r={value}" for value in repeats)])
        for letter, name in (("o", "origin"), ("s", "name"), ("t", "timings")):
            if name not in fields or fields[name] == []:
                raise SDPParseError(f"missing {letter}= line (required by RFC 4566 §5)")
        description = cls(**fields)
        description._layout = layout_entries(
            (kind, value, raw) for kind, value, raw in entries
        )
        return description

    @staticmethod
    def _parse_single(letter: str, value: str) -> tuple[str, Any]:
        if letter == "v":
            version = _VERSION.parse(value)
            if version != 0:
                raise SDPParseError(f"unsupported SDP version {version} (RFC 4566 §5.1: 0)")
            return _VERSION.session_attr, version
        if letter == "o":
            return "origin", Origin.parse(value)
        if letter == "c":
            return "connection", ConnectionData.parse(value)
        field = _SINGLE_TEXT[letter]
        return field.session_attr, field.parse(value)
