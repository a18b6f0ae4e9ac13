"""Hostile inputs of a chosen size and the work a UA does on an inbound INVITE (issue 14).

Shared by ``tests/sip/test_adversarial.py`` (linear-time and fuzz tests) and
``bench/parse_adversarial.py``.  Each shape is one that a security review found
quadratic or worse in some parser, grown to about *size* bytes around an
ordinary INVITE; :func:`normal` is that INVITE padded to the same size with
ordinary SDP lines, the baseline every shape is compared with.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from voiptwisted.sdp.description import SessionDescription
from voiptwisted.sdp.types import SDPParseError
from voiptwisted.sip.headers import SIPParseError
from voiptwisted.sip.message import Message
from voiptwisted.sip.protocol import redact
from voiptwisted.sip.uri import CallerID, InvalidURI

SDP_LINES = [
    "v=0", "o=- 4711 1 IN IP4 192.0.2.10", "s=call", "c=IN IP4 192.0.2.10", "t=0 0",
    "m=audio 50000 RTP/SAVP 0 8 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000",
    "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
    "a=sendrecv",
]  # fmt: skip
SDP = "".join(f"{line}\r\n" for line in SDP_LINES).encode("ascii")
FROM = 'From: "Alice Liddell" <sip:alice@example.com>;tag=1928301774'
VIA = "Via: SIP/2.0/TLS 192.0.2.10:50112;branch=z9hG4bK776asdhds;rport"
CONTACT = "Contact: <sip:alice@192.0.2.10:50112;transport=tls;ob>"
HEAD = [
    "INVITE sip:bob@example.com SIP/2.0",
    VIA,
    "Max-Forwards: 70",
    "To: Bob <sip:bob@example.com>",
    FROM,
    "Call-ID: a84b4c76e66710@pc33.example.com",
    "CSeq: 314159 INVITE",
    CONTACT,
    "Subject: lunch",
    "Content-Type: application/sdp",
]
#: Candidate lines (RFC 8839) pad the normal INVITE: what makes real INVITEs large.
CANDIDATE = b"a=candidate:1 1 UDP 2130706431 192.0.2.10 50000 typ host\r\n"


def invite(replace: dict[str, str] | None = None, extra: str = "", body: bytes = SDP) -> bytes:
    """The ordinary INVITE, header lines swapped by *replace* (old -> new), *extra* lines
    added before Content-Length, and *body*."""
    lines = [(replace or {}).get(line, line) for line in HEAD]
    if extra:
        lines.append(extra)
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def normal(size: int) -> bytes:
    """The ordinary INVITE grown to about *size* bytes with SDP candidate lines."""
    lines = max(0, (size - len(invite())) // len(CANDIDATE))
    return invite(body=SDP + CANDIDATE * lines)


def _fill(unit: str, size: int) -> str:
    """*unit* repeated to about *size* characters less the ordinary INVITE."""
    return unit * max(1, (size - len(invite())) // len(unit.encode("utf-8")))


#: name -> builder(size) of each hostile shape.
SHAPES: dict[str, Callable[[int], bytes]] = {
    # Finding 1: a folded line, then long SP/HTAB runs (RFC 3261 §7.3.1 unfolding).
    "folded SP/HTAB runs": lambda size: invite(
        {"Subject: lunch": "Subject: lunch\r\n \tfolded" + _fill(" \t", size) + "x"}
    ),
    # Finding 2: the trace redaction scanning a=crypto lines and inline: runs.
    "a=crypto: run": lambda size: invite(body=_fill("a=crypto:", size).encode()),
    "inline: run": lambda size: invite(body=b"a=crypto:1 " + _fill("inline:", size).encode()),
    # Finding 3: whitespace header parsing leaves in a display name, and name-addr/Via LWS.
    "VT/U+0085/U+2028 display name": lambda size: invite(
        {FROM: "From: " + _fill("\x0b\x85\u2028", size)}
    ),
    "SP/HTAB before a name-addr": lambda size: invite({FROM: "From: " + _fill(" \t", size) + "x"}),
    "display-name tokens": lambda size: invite({FROM: "From: " + _fill("a ", size)}),
    "unclosed quoted display name": lambda size: invite({FROM: 'From: "' + _fill('\\"', size)}),
    "'<' storm": lambda size: invite({CONTACT: "Contact: " + _fill("<", size)}),
    "';' storm in Via": lambda size: invite({VIA: VIA + _fill(" ; a", size)}),
    "SP/HTAB inside Via parameters": lambda size: invite(
        {VIA: VIA + ";a" + _fill(" \t", size // 2) + "=" + _fill("\t ", size // 2) + "b"}
    ),
    "';' storm in name-addr parameters": lambda size: invite({FROM: FROM + _fill(";a=b", size)}),
    "',' storm in Contact": lambda size: invite({CONTACT: CONTACT + _fill(",<sip:a>", size)}),
    # Finding 12: numbers beyond int()'s 4,300-digit limit.
    "Expires digits": lambda size: invite(extra="Expires: " + _fill("9", size)),
    # SDP: r= lines, each once made the t= value grow by copying.
    "SDP r= lines": lambda size: invite(body=SDP + _fill("r=7d 1h 0 25h\r\n", size).encode()),
}


def receive(data: bytes) -> None:
    """What a UA does with one inbound message: trace redaction, parse, the grammar
    check, every header accessor, the caller ID as shown in logs, and the SDP body.

    Only the documented errors are absorbed (SIPParseError, InvalidURI for a caller
    URI, SDPParseError); anything else propagates.
    """
    redact(data)
    try:
        message = Message.parse(data)
    except SIPParseError:
        return
    checks: list[Callable[[], object]] = [message.validate]
    for name in ("via", "top_via", "from_", "to", "contact", "route", "record_route",
                 "expires", "max_forwards", "branch", "local_tag", "remote_tag"):  # fmt: skip
        checks.append(lambda name=name: getattr(message, name))
    for check in checks:
        with contextlib.suppress(SIPParseError):
            check()
    for name in ("From", "To"):
        caller = CallerID(message.headers.get(name) or "")
        repr(caller)
        caller.display_name  # noqa: B018
        caller.tag  # noqa: B018
        with contextlib.suppress(InvalidURI):
            caller.uri  # noqa: B018
    if message.body:
        with contextlib.suppress(SDPParseError):
            SessionDescription.parse(message.body)
