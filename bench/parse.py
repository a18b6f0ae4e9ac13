"""SIP parse throughput: voiptwisted vs published Python SIP parsers and a bare floor.

Run ``python bench/parse.py``.  Every parser parses the same 12-message corpus
(a REGISTER flow with digest auth, an INVITE dialog with SDP, OPTIONS, and a
compact-header re-INVITE with several Via and Record-Route) and every result is
checked: method or status, Call-ID, CSeq number and method, body length, top Via
branch, From tag and To tag.  A parser that gets any field wrong on any message
is reported as such and left out of the "fastest correct peer" figure.  Our
parser is timed twice: default (lazy) and ``strict=True`` (every value checked).  Runs are
interleaved (round-robin, several rounds, best round kept) so that all parsers
see the same machine state.  Results go to ``bench/RESULTS.md`` (section
"SIP parsing"; other sections of that file are kept).
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from voiptwisted.sip.message import Message, Request

SDP_OFFER = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/SAVP 8 0 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n"
    b"a=sendrecv\r\n"
    b"a=rtcp-mux\r\n"
)
SDP_ANSWER = (
    b"v=0\r\n"
    b"o=bob 2808844564 2808844564 IN IP4 198.51.100.20\r\n"
    b"s=-\r\n"
    b"c=IN IP4 198.51.100.20\r\n"
    b"t=0 0\r\n"
    b"m=audio 30000 RTP/SAVP 8 101\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-16\r\n"
    b"a=ptime:20\r\n"
    b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n"
    b"a=sendrecv\r\n"
)


def _msg(head: str, body: bytes = b"") -> bytes:
    lines = head.strip("\n").split("\n")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


CID = "a84b4c76e66710@pc33.example.com"
INSTANCE = '+sip.instance="<urn:uuid:00000000-0000-1000-8000-000A95A0E128>";reg-id=1'
CONTACT_REG = f"Contact: <sips:alice@192.0.2.10:50112;transport=tls>;{INSTANCE}"
CHALLENGE = (
    'WWW-Authenticate: Digest realm="example.com", qop="auth", '
    'nonce="ea9c8e88df84f1cec4341ae6cbe5a359", opaque="", stale=FALSE, algorithm='
)
AUTHORIZATION = (
    'Authorization: Digest username="alice", realm="example.com", '
    'nonce="ea9c8e88df84f1cec4341ae6cbe5a359", uri="sips:sip.example.com", '
    'response="5ee4d1d3a0df6e0ad87e8b89bd2f4e6e0b2d5eb81bba9bb1f1e0f5c4b6a3b0b1", '
    'algorithm=SHA-256, cnonce="0a4f113b", qop=auth, nc=00000001, opaque=""'
)
VIA_RESP = (
    "Via: SIP/2.0/TLS 192.0.2.10:50112;branch=z9hG4bK776asdhds;rport=50112;"
    "received=203.0.113.7"
)
VIA_A = "Via: SIP/2.0/TLS 192.0.2.10:50112;branch=z9hG4bK776asdhds;rport"
CORPUS: list[tuple[bytes, dict[str, object]]] = []


def _add(data: bytes, start: object, call_id: str, cseq: tuple[int, str], branch: str,
         from_tag: str | None, to_tag: str | None) -> None:  # fmt: skip
    data = data.replace(b"sips:", b"sip:")
    body = data.partition(b"\r\n\r\n")[2]
    CORPUS.append(
        (
            data,
            {
                "start": start,
                "call_id": call_id,
                "cseq": cseq,
                "body": len(body),
                "branch": branch,
                "from_tag": from_tag,
                "to_tag": to_tag,
            },
        )
    )


def _build_corpus() -> None:
    """Build the corpus.  URIs are ``sip:`` with ``transport=tls`` rather than ``sips:``
    because twisted.protocols.sip rejects the sips scheme; the peers get a fair run."""
    reg = f"""REGISTER sips:sip.example.com SIP/2.0
Via: SIP/2.0/TLS 192.0.2.10:50112;branch=z9hG4bKnashds7;rport
Max-Forwards: 70
To: Alice <sips:alice@example.com>
From: Alice <sips:alice@example.com>;tag=456248
Call-ID: 843817637684230@998sdasdh09
CSeq: 1826 REGISTER
{CONTACT_REG}
Expires: 3600
Supported: path, outbound, gruu
User-Agent: voiptwisted/0.1
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY"""
    _add(_msg(reg), "REGISTER", "843817637684230@998sdasdh09", (1826, "REGISTER"),
         "z9hG4bKnashds7", "456248", None)  # fmt: skip
    r401 = f"""SIP/2.0 401 Unauthorized
Via: SIP/2.0/TLS 192.0.2.10:50112;branch=z9hG4bKnashds7;rport=50112;received=203.0.113.7
To: Alice <sips:alice@example.com>;tag=1410948204
From: Alice <sips:alice@example.com>;tag=456248
Call-ID: 843817637684230@998sdasdh09
CSeq: 1826 REGISTER
{CHALLENGE}SHA-256
{CHALLENGE}MD5
Server: kamailio (5.7.4 (x86_64/linux))"""
    _add(_msg(r401), 401, "843817637684230@998sdasdh09", (1826, "REGISTER"),
         "z9hG4bKnashds7", "456248", "1410948204")  # fmt: skip
    reg2 = f"""REGISTER sips:sip.example.com SIP/2.0
Via: SIP/2.0/TLS 192.0.2.10:50112;branch=z9hG4bKnashd92;rport
Max-Forwards: 70
To: Alice <sips:alice@example.com>
From: Alice <sips:alice@example.com>;tag=ja743ks76zlflH
Call-ID: 843817637684230@998sdasdh09
CSeq: 1827 REGISTER
{CONTACT_REG}
{AUTHORIZATION}
Expires: 3600
User-Agent: voiptwisted/0.1"""
    _add(_msg(reg2), "REGISTER", "843817637684230@998sdasdh09", (1827, "REGISTER"),
         "z9hG4bKnashd92", "ja743ks76zlflH", None)  # fmt: skip
    ok_reg = f"""SIP/2.0 200 OK
Via: SIP/2.0/TLS 192.0.2.10:50112;branch=z9hG4bKnashd92;rport=50112;received=203.0.113.7
To: Alice <sips:alice@example.com>;tag=37GkEhwl6
From: Alice <sips:alice@example.com>;tag=ja743ks76zlflH
Call-ID: 843817637684230@998sdasdh09
CSeq: 1827 REGISTER
Contact: <sips:alice@192.0.2.10:50112;transport=tls>;expires=3600;{INSTANCE}
Supported: outbound
Require: outbound
Date: Sat, 13 Nov 2010 23:29:00 GMT
Server: kamailio (5.7.4 (x86_64/linux))"""
    _add(_msg(ok_reg), 200, "843817637684230@998sdasdh09", (1827, "REGISTER"),
         "z9hG4bKnashd92", "ja743ks76zlflH", "37GkEhwl6")  # fmt: skip
    invite = f"""INVITE sips:bob@example.com SIP/2.0
{VIA_A}
Max-Forwards: 70
To: Bob <sips:bob@example.com>
From: "Alice Liddell" <sips:alice@example.com>;tag=1928301774
Call-ID: {CID}
CSeq: 314159 INVITE
Contact: <sips:alice@192.0.2.10:50112;transport=tls;ob>
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REFER, NOTIFY
Supported: replaces, timer, 100rel
Session-Expires: 1800
User-Agent: voiptwisted/0.1
Content-Type: application/sdp"""
    _add(_msg(invite, SDP_OFFER), "INVITE", CID, (314159, "INVITE"), "z9hG4bK776asdhds",
         "1928301774", None)  # fmt: skip
    trying = f"""SIP/2.0 100 Trying
{VIA_RESP}
To: Bob <sips:bob@example.com>
From: "Alice Liddell" <sips:alice@example.com>;tag=1928301774
Call-ID: {CID}
CSeq: 314159 INVITE
Server: kamailio (5.7.4 (x86_64/linux))"""
    _add(_msg(trying), 100, CID, (314159, "INVITE"), "z9hG4bK776asdhds", "1928301774", None)
    rr = "Record-Route: <sip:proxy2.example.net;lr>, <sips:proxy1.example.com;lr;r2=on>"
    ringing = f"""SIP/2.0 180 Ringing
{VIA_RESP}
{rr}
To: Bob <sips:bob@example.com>;tag=a6c85cf
From: "Alice Liddell" <sips:alice@example.com>;tag=1928301774
Call-ID: {CID}
CSeq: 314159 INVITE
Contact: <sips:bob@198.51.100.20:5061;transport=tls>"""
    _add(_msg(ringing), 180, CID, (314159, "INVITE"), "z9hG4bK776asdhds", "1928301774",
         "a6c85cf")  # fmt: skip
    ok_inv = f"""SIP/2.0 200 OK
{VIA_RESP}
{rr}
To: Bob <sips:bob@example.com>;tag=a6c85cf
From: "Alice Liddell" <sips:alice@example.com>;tag=1928301774
Call-ID: {CID}
CSeq: 314159 INVITE
Contact: <sips:bob@198.51.100.20:5061;transport=tls>
Allow: INVITE, ACK, CANCEL, BYE, OPTIONS
Supported: timer
Session-Expires: 1800;refresher=uac
Content-Type: application/sdp"""
    _add(_msg(ok_inv, SDP_ANSWER), 200, CID, (314159, "INVITE"), "z9hG4bK776asdhds",
         "1928301774", "a6c85cf")  # fmt: skip
    ack = f"""ACK sips:bob@198.51.100.20:5061;transport=tls SIP/2.0
Via: SIP/2.0/TLS 192.0.2.10:50112;branch=z9hG4bKnashds9;rport
Route: <sips:proxy1.example.com;lr;r2=on>, <sip:proxy2.example.net;lr>
Max-Forwards: 70
To: Bob <sips:bob@example.com>;tag=a6c85cf
From: "Alice Liddell" <sips:alice@example.com>;tag=1928301774
Call-ID: {CID}
CSeq: 314159 ACK"""
    _add(_msg(ack), "ACK", CID, (314159, "ACK"), "z9hG4bKnashds9", "1928301774", "a6c85cf")
    bye = f"""BYE sips:alice@192.0.2.10:50112;transport=tls;ob SIP/2.0
Via: SIP/2.0/TLS 198.51.100.20:5061;branch=z9hG4bKnashds10
Via: SIP/2.0/TLS proxy1.example.com:5061;branch=z9hG4bK4b43c2ff8.1
Max-Forwards: 69
From: Bob <sips:bob@example.com>;tag=a6c85cf
To: "Alice Liddell" <sips:alice@example.com>;tag=1928301774
Call-ID: {CID}
CSeq: 231 BYE"""
    _add(_msg(bye), "BYE", CID, (231, "BYE"), "z9hG4bKnashds10", "a6c85cf", "1928301774")
    options = """OPTIONS sips:alice@192.0.2.10:50112;transport=tls SIP/2.0
Via: SIP/2.0/TLS 203.0.113.1:5061;branch=z9hG4bKhjhs8ass877
Max-Forwards: 70
To: <sips:alice@192.0.2.10:50112>
From: <sips:monitor@example.com>;tag=1928301774x
Call-ID: a84b4c76e66710-opt
CSeq: 63104 OPTIONS
Contact: <sips:monitor@203.0.113.1:5061>
Accept: application/sdp"""
    _add(_msg(options), "OPTIONS", "a84b4c76e66710-opt", (63104, "OPTIONS"),
         "z9hG4bKhjhs8ass877", "1928301774x", None)  # fmt: skip
    VIA_P1 = "SIP/2.0/TLS proxy1.example.com:5061;branch=z9hG4bK4b43c2ff8.1"
    reinv = f"""INVITE sips:alice@192.0.2.10:50112;transport=tls;ob SIP/2.0
v: SIP/2.0/TLS proxy2.example.net:5061;branch=z9hG4bK2d4790.1, {VIA_P1}
v: SIP/2.0/TLS 198.51.100.20:5061;branch=z9hG4bKnashds11;received=198.51.100.20
Record-Route: <sip:proxy2.example.net;lr>
Record-Route: <sips:proxy1.example.com;lr;r2=on>
Max-Forwards: 68
f: Bob <sips:bob@example.com>;tag=a6c85cf
t: "Alice Liddell" <sips:alice@example.com>;tag=1928301774
i: {CID}
CSeq: 232 INVITE
m: <sips:bob@198.51.100.20:5061;transport=tls>
k: timer
c: application/sdp"""
    data = _msg(reinv, SDP_ANSWER).replace(b"Content-Length:", b"l:")
    _add(data, "INVITE", CID, (232, "INVITE"), "z9hG4bK2d4790.1", "a6c85cf", "1928301774")


_TAG_RE = re.compile(r";\s*tag\s*=\s*([^;,\s]+)")


# --- adapters: each returns the fields the corpus checks -----------------------------------


def ours(data: bytes) -> tuple:
    m = Message.parse(data)
    start = m.method if isinstance(m, Request) else m.status_code
    return (start, m.call_id, m.cseq, len(m.body), m.branch, m.local_tag, m.remote_tag)


def ours_strict(data: bytes) -> tuple:
    """The same with ``strict=True``: every From/To/Via/Contact/Route value validated."""
    m = Message.parse(data, strict=True)
    start = m.method if isinstance(m, Request) else m.status_code
    return (start, m.call_id, m.cseq, len(m.body), m.branch, m.local_tag, m.remote_tag)


_COMPACT = {"i": "call-id", "f": "from", "t": "to", "v": "via", "l": "content-length"}


def floor(data: bytes) -> tuple:
    """Split start line and headers into a dict, then read the same fields with str ops."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    start = lines[0].split(" ", 2)
    h: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        name = _COMPACT.get(name, name)
        if name not in h:
            h[name] = value.strip()
    first = start[0] if start[0] != "SIP/2.0" else int(start[1])
    number, method = h["cseq"].split()
    via = h["via"].split(",", 1)[0]
    branch = via.split(";branch=", 1)[1].split(";", 1)[0]
    ftag = _TAG_RE.search(h["from"])
    ttag = _TAG_RE.search(h["to"])
    return (first, h["call-id"], (int(number), method),
            len(body[: int(h.get("content-length", len(body)))]), branch,
            ftag and ftag.group(1), ttag and ttag.group(1))  # fmt: skip


def _sipmessage() -> Callable[[bytes], tuple] | None:
    try:
        import sipmessage
    except ImportError:
        return None

    def parse(data: bytes) -> tuple:
        m = sipmessage.Message.parse(data)
        start = m.method if isinstance(m, sipmessage.Request) else m.code
        cseq = m.cseq
        return (start, m.call_id, (cseq.sequence, cseq.method), len(m.body),
                m.via[0].parameters.get("branch"), m.from_address.parameters.get("tag"),
                m.to_address.parameters.get("tag"))  # fmt: skip

    return parse


def _twisted() -> Callable[[bytes], tuple] | None:
    try:
        from twisted.protocols import sip
    except ImportError:
        return None

    def parse(data: bytes) -> tuple:
        got = []
        parser = sip.MessagesParser(got.append)
        parser.dataReceived(data)
        parser.dataDone()
        m = got[0]
        h = m.headers
        start = m.method if isinstance(m, sip.Request) else m.code
        number, method = h["cseq"][0].split()
        return (start, h["call-id"][0], (int(number), method), len(m.body),
                sip.parseViaHeader(h["via"][0]).branch,
                sip.parseAddress(h["from"][0])[2].get("tag"),
                sip.parseAddress(h["to"][0])[2].get("tag"))  # fmt: skip

    return parse


def _aiosipua() -> Callable[[bytes], tuple] | None:
    try:
        from aiosipua.message import SipMessage, SipRequest
    except ImportError:
        return None

    def parse(data: bytes) -> tuple:
        m = SipMessage.parse(data)
        start = m.method if isinstance(m, SipRequest) else m.status_code
        cseq = m.cseq
        return (start, m.call_id, (cseq.seq, cseq.method), len(m.body), m.via[0].branch,
                m.from_addr.tag, m.to_addr.tag)  # fmt: skip

    return parse


def check(parse: Callable[[bytes], tuple]) -> list[str]:
    """Return a description of every field the parser gets wrong on the corpus."""
    errors = []
    for i, (data, want) in enumerate(CORPUS):
        expected = (want["start"], want["call_id"], want["cseq"], want["body"], want["branch"],
                    want["from_tag"], want["to_tag"])  # fmt: skip
        try:
            got = parse(data)
        except Exception as exc:  # a peer failing is a result, not a crash of the bench
            errors.append(f"message {i}: {type(exc).__name__}: {str(exc)[:60]}")
            continue
        if tuple(got) != expected:
            names = ("start", "call_id", "cseq", "body", "branch", "from_tag", "to_tag")
            triples = zip(names, got, expected, strict=True)
            bad = [f"{n}={g!r} (want {e!r})" for n, g, e in triples if g != e]
            errors.append(f"message {i}: " + ", ".join(bad))
    return errors


def rate(parse: Callable[[bytes], tuple], seconds: float) -> float:
    """Messages per CPU-second over about *seconds* of parsing the whole corpus.

    Process CPU time, not wall time: the machine is shared, and a parser is
    single-threaded, so CPU time is the fairer and steadier measure."""
    messages = [data for data, _ in CORPUS]
    n = 0
    start = time.process_time()
    deadline = start + seconds
    while True:
        for data in messages:
            parse(data)
        n += len(messages)
        now = time.process_time()
        if now >= deadline:
            return n / (now - start)


def _machine() -> list[str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    uname = subprocess.run(["uname", "-a"], capture_output=True, text=True, check=False)
    return [
        f"- machine: `{uname.stdout.strip()}`",
        f"- CPU: {cpu} ({os.cpu_count()} cores)",
        f"- Python: {platform.python_implementation()} {sys.version.split()[0]}",
        f"- date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
    ]


def main() -> None:
    _build_corpus()
    parsers: dict[str, Callable[[bytes], tuple]] = {
        "voiptwisted": ours,
        "voiptwisted strict=True": ours_strict,
        "floor": floor,
    }
    for name, factory in (
        ("sipmessage", _sipmessage),
        ("twisted.protocols.sip", _twisted),
        ("aiosipua", _aiosipua),
    ):
        parse = factory()
        if parse is not None:
            parsers[name] = parse
    problems = {name: check(parse) for name, parse in parsers.items()}
    for name, errs in problems.items():
        print(f"{name}: {'all fields correct' if not errs else f'{len(errs)} wrong'}")
        for err in errs[:5]:
            print("   ", err)
    if problems["voiptwisted"] or problems["floor"]:
        raise SystemExit("voiptwisted or the floor parse the corpus wrongly")
    rounds, seconds = 7, 0.5
    best = dict.fromkeys(parsers, 0.0)
    timed = {
        name: parse
        for name, parse in parsers.items()
        if not any("Error" in err or "Exception" in err for err in problems[name])
    }
    for _ in range(rounds):
        for name, parse in timed.items():
            best[name] = max(best[name], rate(parse, seconds))
    peers = [n for n in parsers if not n.startswith(("voiptwisted", "floor")) and not problems[n]]
    fastest = max(peers, key=best.__getitem__) if peers else None
    rows = ["| parser | messages/s | x floor | voiptwisted / parser | corpus |",
            "|---|---:|---:|---:|---|"]  # fmt: skip
    for name in sorted(parsers, key=best.__getitem__, reverse=True):
        if name not in timed:
            rows.append(f"| {name} | not timed | | | raises on {len(problems[name])} |")
            continue
        verdict = f"{len(problems[name])} messages wrong" if problems[name] else "correct"
        rows.append(
            f"| {name} | {best[name]:,.0f} | {best[name] / best['floor']:.2f} | "
            f"{best['voiptwisted'] / best[name]:.2f} | {verdict} |"
        )
    vs_floor = best["voiptwisted"] / best["floor"]
    lines = ["## SIP parsing", "", *_machine(), "",
             f"Corpus: {len(CORPUS)} messages; fields checked per message: method/status, "
             "Call-ID, CSeq, body length, top Via branch, From tag, To tag. "
             f"{rounds} interleaved rounds of {seconds}s CPU time per parser, best round "
             "kept.", "",
             *rows, ""]  # fmt: skip
    if fastest:
        vs_peer = best["voiptwisted"] / best[fastest]
        lines.append(
            f"Target >= 2x the fastest correct peer ({fastest}): {vs_peer:.2f}x "
            f"({'met' if vs_peer >= 2 else 'NOT met'}); target >= 0.6x floor: {vs_floor:.2f}x "
            f"({'met' if vs_floor >= 0.6 else 'NOT met'})."
        )
    lines += [
        "",
        "`voiptwisted` is the default `Message.parse`: start line, header lines, mandatory "
        "and single-valued headers, CSeq, Max-Forwards, Content-Length and Call-ID checked "
        "at once; the From/To/Via/Contact grammar when those values are read. "
        "`strict=True` also checks every Via/From/To/Contact/Route/Record-Route value "
        "up front. URIs in the corpus are `sip:` with `transport=tls` because "
        "twisted.protocols.sip rejects `sips:`; it is timed but, having a wrong top Via "
        "branch on a combined Via line, not counted as a correct peer.",
    ]
    for name, errs in problems.items():
        if errs:
            lines.append(f"- {name} wrong on: " + "; ".join(errs[:3]))
    lines.append("")
    text = "\n".join(lines)
    print(text)
    out = Path(__file__).resolve().parent / "RESULTS.md"
    old = out.read_text() if out.exists() else "# Benchmarks\n\n"
    section = re.compile(r"## SIP parsing\n.*?(?=\n## |\Z)", re.S)
    new = section.sub(lambda _: text.rstrip("\n") + "\n", old) if section.search(old) else (
        old.rstrip("\n") + "\n\n" + text
    )
    out.write_text(new if new.endswith("\n") else new + "\n")


if __name__ == "__main__":
    main()
