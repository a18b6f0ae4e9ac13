"""Tests for voiptwisted.sip.digest (RFC 7616, RFC 8760, RFC 2617, RFC 3261 §22.4)."""

from __future__ import annotations

import hashlib
import itertools
import re

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.sip.digest import (
    MAX_CHALLENGES,
    Challenge,
    Credentials,
    DigestClient,
    DigestError,
    DigestRefused,
)
from voiptwisted.sip.message import Request, Response

# RFC 7616 §3.9.1 worked example.
RFC_REALM = "http-auth@example.org"
RFC_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
RFC_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC_USER = "Mufasa"
RFC_PASSWORD = "Circle of Life"
RFC_MD5_RESPONSE = "8ca523f5e9506fed4657c9700eebdbec"
RFC_SHA256_RESPONSE = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"

# RFC 7616 §3.9.2 inputs (SHA-512-256, userhash=true).
EX2_USER = "J\u00e4s\u00f8n Doe"
EX2_PASSWORD = "Secret, or not?"
EX2_REALM = "api@example.org"
EX2_NONCE = "5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK"
EX2_CNONCE = "NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v"
EX2_OPAQUE = "HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS"
# The values printed in RFC 7616 §3.9.2, which were computed with SHA-512 truncated
# to 256 bits rather than with FIPS 180-4 SHA-512/256.
EX2_RFC_PRINTED_RESPONSE = "ae66e67d6b427bd3f120414a82e4acff38e8ecd9101d6c861229025f607a79dd"
EX2_RFC_PRINTED_USERHASH = "488869477bf257147b804c45308cd62ac4e25eb717b12b298c79e62dcea254ec"

SECRET = "hunter2-Very-Secret"


def rfc_challenge(algorithm: str, qop: str = "auth, auth-int") -> Challenge:
    return Challenge.parse(
        f'Digest realm="{RFC_REALM}", qop="{qop}", algorithm={algorithm}, '
        f'nonce="{RFC_NONCE}", opaque="{RFC_OPAQUE}"'
    )


def params(header: str) -> dict[str, str]:
    """Split an Authorization value into its parameters (quotes removed)."""
    assert header.startswith("Digest ")
    found = re.findall(r'([\w*-]+)=("(?:[^"\\]|\\.)*"|[^,\s]+)', header[len("Digest ") :])
    return {name: value.strip('"') for name, value in found}


class ChallengeParseTests(SynchronousTestCase):
    def test_rfc7616_challenge(self) -> None:
        """RFC 7616 §3.3: realm, nonce, opaque, algorithm, qop list."""
        challenge = rfc_challenge("SHA-256")
        self.assertEqual(challenge.scheme, "Digest")
        self.assertEqual(challenge.realm, RFC_REALM)
        self.assertEqual(challenge.nonce, RFC_NONCE)
        self.assertEqual(challenge.opaque, RFC_OPAQUE)
        self.assertEqual(challenge.algorithm, "SHA-256")
        self.assertEqual(challenge.qop, ("auth", "auth-int"))
        self.assertFalse(challenge.stale)

    def test_defaults(self) -> None:
        """RFC 7616 §3.3: algorithm defaults to MD5; no qop means the RFC 2069 form."""
        challenge = Challenge.parse('Digest realm="r", nonce="n"')
        self.assertEqual(challenge.algorithm, "MD5")
        self.assertEqual(challenge.qop, ())
        self.assertIsNone(challenge.opaque)
        self.assertFalse(challenge.userhash)

    def test_quoted_strings_with_escapes_and_commas(self) -> None:
        """RFC 7230 §3.2.6 quoted-string: backslash escapes, commas inside quotes."""
        challenge = Challenge.parse(
            r'Digest realm="a \"quoted\", realm\\x", nonce="n,1", opaque="o=p"'
        )
        self.assertEqual(challenge.realm, 'a "quoted", realm\\x')
        self.assertEqual(challenge.nonce, "n,1")
        self.assertEqual(challenge.opaque, "o=p")

    def test_case_insensitive_names_and_scheme(self) -> None:
        """RFC 7235 §2.1: scheme and parameter names are case-insensitive."""
        challenge = Challenge.parse('digest REALM="r", Nonce="n", QOP="AUTH", Algorithm=sha-256')
        self.assertEqual((challenge.realm, challenge.nonce), ("r", "n"))
        self.assertEqual(challenge.qop, ("auth",))
        self.assertEqual(challenge.algorithm, "SHA-256")

    def test_stale_true_any_case(self) -> None:
        """RFC 7616 §3.3: stale=TRUE (case-insensitive) means retry with the new nonce."""
        for text in ("stale=TRUE", "stale=true", 'stale="True"'):
            challenge = Challenge.parse(f'Digest realm="r", nonce="n", {text}')
            self.assertTrue(challenge.stale, text)
        self.assertFalse(Challenge.parse('Digest realm="r", nonce="n", stale=false').stale)

    def test_whitespace_and_empty_list_elements(self) -> None:
        challenge = Challenge.parse('Digest  realm = "r" ,, nonce= "n" ,\tqop="auth-int , auth" ')
        self.assertEqual(challenge.qop, ("auth-int", "auth"))

    def test_userhash_and_algorithm_canonical(self) -> None:
        challenge = Challenge.parse(
            'Digest realm="r", nonce="n", algorithm=sha-512-256-SESS, userhash=true, '
            'charset=UTF-8, domain="sip:example.com"'
        )
        self.assertEqual(challenge.algorithm, "SHA-512-256-sess")
        self.assertTrue(challenge.userhash)
        self.assertEqual(challenge.charset, "UTF-8")
        self.assertEqual(challenge.domain, "sip:example.com")

    def test_unknown_algorithm_kept_but_unsupported(self) -> None:
        challenge = Challenge.parse('Digest realm="r", nonce="n", algorithm=AKAv1-MD5')
        self.assertEqual(challenge.algorithm, "AKAv1-MD5")
        self.assertFalse(challenge.supported)
        self.assertTrue(Challenge.parse('Digest realm="r", nonce="n"').supported)

    def test_garbage_raises_digest_error(self) -> None:
        for value in [
            "",
            "Digest",
            'Basic realm="r"',
            'Digestrealm="r", nonce="n"',
            'Digest realm="r"',
            'Digest nonce="n"',
            'Digest realm="r", nonce=""',
            'Digest realm="r", nonce="n',
            'Digest realm="r" nonce="n"',
            'Digest realm="r", nonce="n", realm="x"',
            'Digest realm=, nonce="n"',
            'Digest realm="r", nonce="n", =x',
            'Digest realm="r", nonce="n", qop',
            'Digest realm="r", nonce="n" "junk"',
            "Digest " + "a=b, " * 5000,
        ]:
            self.assertRaises(DigestError, Challenge.parse, value)

    def test_digest_error_is_value_error(self) -> None:
        self.assertTrue(issubclass(DigestError, ValueError))

    def test_non_str(self) -> None:
        self.assertRaises(DigestError, Challenge.parse, b'Digest realm="r", nonce="n"')

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=80) | st.from_regex(r'Digest [a-z=", \\]{0,40}', fullmatch=True))
    def test_arbitrary_input_only_digest_error(self, value: str) -> None:
        try:
            challenge = Challenge.parse(value)
        except DigestError:
            return
        self.assertIsInstance(challenge, Challenge)


class RFC7616VectorTests(SynchronousTestCase):
    """RFC 7616 §3.9.1: the Mufasa example, MD5 and SHA-256."""

    def test_md5_vector(self) -> None:
        """RFC 7616 §3.9.1 MD5 response."""
        client = DigestClient(RFC_USER, RFC_PASSWORD)
        header = client.authorization(
            rfc_challenge("MD5"), "GET", "/dir/index.html", cnonce=RFC_CNONCE
        )
        got = params(header)
        self.assertEqual(got["response"], RFC_MD5_RESPONSE)
        self.assertEqual(got["nc"], "00000001")
        self.assertEqual(got["qop"], "auth")
        self.assertEqual(got["cnonce"], RFC_CNONCE)
        self.assertEqual(got["opaque"], RFC_OPAQUE)
        self.assertEqual(got["username"], RFC_USER)
        self.assertEqual(got["uri"], "/dir/index.html")
        self.assertEqual(got["algorithm"], "MD5")

    def test_sha256_vector(self) -> None:
        """RFC 7616 §3.9.1 SHA-256 response."""
        client = DigestClient(RFC_USER, RFC_PASSWORD)
        header = client.authorization(
            rfc_challenge("SHA-256"), "GET", "/dir/index.html", cnonce=RFC_CNONCE
        )
        self.assertEqual(params(header)["response"], RFC_SHA256_RESPONSE)
        self.assertEqual(params(header)["algorithm"], "SHA-256")

    def test_rfc2617_md5_vector(self) -> None:
        """RFC 2617 §3.5 example (MD5, qop=auth)."""
        challenge = Challenge.parse(
            'Digest realm="testrealm@host.com", qop="auth,auth-int", '
            'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
            'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
        )
        header = DigestClient("Mufasa", "Circle Of Life").authorization(
            challenge, "GET", "/dir/index.html", cnonce="0a4f113b"
        )
        self.assertEqual(params(header)["response"], "6629fae49393a05397450978507c4ef1")


class SHA512256Tests(SynchronousTestCase):
    """RFC 7616 §3.2 / RFC 8760 §2.1: SHA-512-256 is FIPS 180-4 SHA-512/256."""

    def test_primitive_is_fips_sha512_256(self) -> None:
        """FIPS 180-4 example: SHA-512/256("abc")."""
        self.assertEqual(
            hashlib.new("sha512_256", b"abc").hexdigest(),
            "53048e2681941ef99b2e29b76b4c7dabe4c2d0c634fc6d46e0e2f13107e7af23",
        )

    def test_rfc7616_example2_with_real_sha512_256(self) -> None:
        """RFC 7616 §3.9.2 inputs: response computed independently with hashlib sha512_256,
        and different from the truncated-SHA-512 figure printed in the RFC."""

        def h(text: str) -> str:
            return hashlib.new("sha512_256", text.encode()).hexdigest()

        ha1 = h(f"{EX2_USER}:{EX2_REALM}:{EX2_PASSWORD}")
        ha2 = h("GET:/doe.json")
        expected = h(f"{ha1}:{EX2_NONCE}:00000001:{EX2_CNONCE}:auth:{ha2}")
        self.assertEqual(
            expected, "3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5"
        )

        challenge = Challenge.parse(
            f'Digest realm="{EX2_REALM}", qop="auth", algorithm=SHA-512-256, '
            f'nonce="{EX2_NONCE}", opaque="{EX2_OPAQUE}", charset=UTF-8, userhash=true'
        )
        header = DigestClient(EX2_USER, EX2_PASSWORD).authorization(
            challenge, "GET", "/doe.json", cnonce=EX2_CNONCE
        )
        got = params(header)
        self.assertEqual(got["response"], expected)
        self.assertEqual(got["algorithm"], "SHA-512-256")
        self.assertEqual(got["userhash"], "true")
        # RFC 7616 §3.4.4: username = H(username ":" realm).
        self.assertEqual(
            got["username"], "793263caabb707a56211940d90411ea4a575adeccb7e360aeb624ed06ece9b0b"
        )
        self.assertNotEqual(got["response"], EX2_RFC_PRINTED_RESPONSE)
        self.assertNotEqual(got["username"], EX2_RFC_PRINTED_USERHASH)

    def test_rfc_printed_values_are_truncated_sha512(self) -> None:
        """The §3.9.2 figures come from truncated SHA-512: the bug we must not have."""

        def truncated(text: str) -> str:
            return hashlib.sha512(text.encode()).hexdigest()[:64]

        ha1 = truncated(f"{EX2_USER}:{EX2_REALM}:{EX2_PASSWORD}")
        ha2 = truncated("GET:/doe.json")
        self.assertEqual(
            truncated(f"{ha1}:{EX2_NONCE}:00000001:{EX2_CNONCE}:auth:{ha2}"),
            EX2_RFC_PRINTED_RESPONSE,
        )
        self.assertEqual(truncated(f"{EX2_USER}:{EX2_REALM}"), EX2_RFC_PRINTED_USERHASH)


class AuthorizationTests(SynchronousTestCase):
    def challenge(self, nonce: str = "abc", **extra: str) -> Challenge:
        more = "".join(f", {k}={v}" for k, v in extra.items())
        return Challenge.parse(f'Digest realm="example.com", nonce="{nonce}", qop="auth"{more}')

    def test_nc_increments_per_nonce(self) -> None:
        """RFC 7616 §3.4: nc counts requests sent with the same nonce, in hex."""
        client = DigestClient("alice", SECRET)
        counts = [
            params(client.authorization(self.challenge(), "REGISTER", "sip:example.com"))["nc"]
            for _ in range(17)
        ]
        self.assertEqual(counts[:3], ["00000001", "00000002", "00000003"])
        self.assertEqual(counts[15:], ["00000010", "00000011"])

    def test_nc_resets_on_new_nonce(self) -> None:
        """RFC 7616 §3.4: a new nonce (e.g. after stale=true) starts at nc=00000001."""
        client = DigestClient("alice", SECRET)
        client.authorization(self.challenge("n1"), "REGISTER", "sip:example.com")
        client.authorization(self.challenge("n1"), "REGISTER", "sip:example.com")
        fresh = client.authorization(
            self.challenge("n2", stale="true"), "REGISTER", "sip:example.com"
        )
        self.assertEqual(params(fresh)["nc"], "00000001")

    def test_cnonce_random_by_default(self) -> None:
        client = DigestClient("alice", SECRET)
        first = params(client.authorization(self.challenge(), "INVITE", "sip:bob@example.com"))
        second = params(client.authorization(self.challenge(), "INVITE", "sip:bob@example.com"))
        self.assertNotEqual(first["cnonce"], second["cnonce"])
        self.assertGreaterEqual(len(first["cnonce"]), 16)

    def test_opaque_echoed(self) -> None:
        """RFC 7616 §3.4: opaque is returned unchanged."""
        challenge = Challenge.parse(
            'Digest realm="r", nonce="n", qop="auth", opaque="x \\"y\\", z"'
        )
        header = DigestClient("alice", SECRET).authorization(challenge, "BYE", "sip:b@h")
        self.assertIn('opaque="x \\"y\\", z"', header)

    def test_no_opaque_not_sent(self) -> None:
        header = DigestClient("alice", SECRET).authorization(self.challenge(), "BYE", "sip:b@h")
        self.assertNotIn("opaque", header)

    def test_sess_variants(self) -> None:
        """RFC 7616 §3.4.2: -sess HA1 = H(H(user:realm:pass):nonce:cnonce)."""
        for algorithm, name in [
            ("MD5-sess", "md5"),
            ("SHA-256-sess", "sha256"),
            ("SHA-512-256-sess", "sha512_256"),
        ]:

            def h(text: str, name: str = name) -> str:
                return hashlib.new(name, text.encode()).hexdigest()

            challenge = Challenge.parse(
                f'Digest realm="r", nonce="N", qop="auth", algorithm={algorithm}'
            )
            header = DigestClient("u", "p").authorization(
                challenge, "INVITE", "sip:x@y", cnonce="C"
            )
            ha1 = h(f"{h('u:r:p')}:N:C")
            expected = h(f"{ha1}:N:00000001:C:auth:{h('INVITE:sip:x@y')}")
            self.assertEqual(params(header)["response"], expected, algorithm)
            self.assertEqual(params(header)["algorithm"], algorithm)

    def test_auth_preferred_over_auth_int(self) -> None:
        header = DigestClient("u", "p").authorization(
            rfc_challenge("MD5", "auth-int,auth"), "GET", "/"
        )
        self.assertEqual(params(header)["qop"], "auth")

    def test_auth_int_when_only_offered(self) -> None:
        """RFC 7616 §3.4.3: qop=auth-int hashes the body into A2."""
        body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
        challenge = Challenge.parse('Digest realm="r", nonce="N", qop="auth-int"')
        header = DigestClient("u", "p").authorization(
            challenge, "INVITE", "sip:x@y", body, cnonce="C"
        )

        def md5(data: bytes) -> str:
            return hashlib.md5(data, usedforsecurity=False).hexdigest()

        ha2 = md5(f"INVITE:sip:x@y:{md5(body)}".encode())
        expected = md5(f"{md5(b'u:r:p')}:N:00000001:C:auth-int:{ha2}".encode())
        self.assertEqual(params(header)["qop"], "auth-int")
        self.assertEqual(params(header)["response"], expected)

    def test_no_qop_rfc2069_form(self) -> None:
        """RFC 2617 §3.2.2.1: without qop, response = H(HA1:nonce:HA2), no nc/cnonce."""
        challenge = Challenge.parse('Digest realm="r", nonce="N"')
        header = DigestClient("u", "p").authorization(challenge, "REGISTER", "sip:r")

        def md5(text: str) -> str:
            return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

        expected = md5(f"{md5('u:r:p')}:N:{md5('REGISTER:sip:r')}")
        got = params(header)
        self.assertEqual(got["response"], expected)
        self.assertNotIn("nc", got)
        self.assertNotIn("cnonce", got)
        self.assertNotIn("qop", got)

    def test_sess_without_qop_sends_cnonce(self) -> None:
        """The server needs the cnonce to recompute a -sess HA1."""
        challenge = Challenge.parse('Digest realm="r", nonce="N", algorithm=MD5-sess')
        header = DigestClient("u", "p").authorization(challenge, "REGISTER", "sip:r", cnonce="C")
        self.assertEqual(params(header)["cnonce"], "C")

    def test_unsupported_qop(self) -> None:
        challenge = Challenge.parse('Digest realm="r", nonce="N", qop="auth-conf"')
        self.assertFalse(challenge.supported)
        self.assertRaises(
            DigestError, DigestClient("u", "p").authorization, challenge, "REGISTER", "sip:r"
        )

    def test_unsupported_algorithm_clear_error(self) -> None:
        challenge = Challenge.parse('Digest realm="r", nonce="N", algorithm=SHA-1')
        with self.assertRaises(DigestError) as caught:
            DigestClient("u", SECRET).authorization(challenge, "REGISTER", "sip:r")
        self.assertIn("unsupported digest algorithm 'SHA-1'", str(caught.exception))
        self.assertNotIn(SECRET, str(caught.exception))

    def test_select_first_supported(self) -> None:
        """Challenges are tried in the server's order; unsupported ones are skipped."""
        challenges = [
            Challenge.parse('Digest realm="r", nonce="1", algorithm=SHA3-256'),
            Challenge.parse('Digest realm="r", nonce="2", algorithm=SHA-256, qop="auth"'),
            Challenge.parse('Digest realm="r", nonce="3", algorithm=MD5, qop="auth"'),
        ]
        self.assertEqual(DigestClient.select(challenges).nonce, "2")
        self.assertRaises(DigestError, DigestClient.select, challenges[:1])

    def test_non_ascii_username_uses_extended_notation(self) -> None:
        """RFC 7616 §3.4.4: username* with RFC 5987 encoding when not plain ASCII."""
        challenge = Challenge.parse('Digest realm="r", nonce="N", qop="auth"')
        header = DigestClient(EX2_USER, "p").authorization(challenge, "GET", "/")
        self.assertIn("username*=UTF-8''J%C3%A4s%C3%B8n%20Doe", header)

    def test_quoted_values_escaped(self) -> None:
        challenge = Challenge.parse('Digest realm="a\\"b", nonce="N", qop="auth"')
        header = DigestClient('we"ird', "p").authorization(challenge, "GET", "/")
        self.assertIn('username="we\\"ird"', header)
        self.assertIn('realm="a\\"b"', header)

    def test_nonce_table_bounded(self) -> None:
        client = DigestClient("u", "p")
        for index in range(200):
            client.authorization(self.challenge(f"n{index}"), "OPTIONS", "sip:x")
        self.assertLessEqual(len(client._nonce_counts), 32)


class PasswordSecrecyTests(SynchronousTestCase):
    def test_repr_hides_password(self) -> None:
        client = DigestClient("alice", SECRET)
        self.assertEqual(repr(client), "DigestClient(username='alice')")
        self.assertNotIn(SECRET, repr(client))
        self.assertNotIn(SECRET, str(client))

    def test_password_not_in_header_or_errors(self) -> None:
        client = DigestClient("alice", SECRET)
        header = client.authorization(rfc_challenge("SHA-256"), "REGISTER", "sip:example.com")
        self.assertNotIn(SECRET, header)
        bad_challenges = (
            'Digest realm="r", nonce="N", algorithm=X',
            'Digest realm="r", nonce="N", qop=x',
        )
        for bad in bad_challenges:
            try:
                client.authorization(Challenge.parse(bad), "REGISTER", "sip:r")
            except DigestError as exc:
                self.assertNotIn(SECRET, str(exc) + repr(exc))
            else:
                self.fail("expected DigestError")

    def test_password_not_an_attribute_by_plain_name(self) -> None:
        client = DigestClient("alice", SECRET)
        self.assertFalse(hasattr(client, "password"))
        self.assertFalse(hasattr(client, "__dict__"))


def challenged(code: int, *values: str) -> Response:
    """A 401/407 carrying *values* as WWW-Authenticate / Proxy-Authenticate headers."""
    name = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
    base = [
        ("Via", "SIP/2.0/TLS 10.0.0.5:5061;branch=z9hG4bKx"),
        ("From", "<sip:alice@example.com>;tag=a"),
        ("To", "<sip:bob@example.com>;tag=b"),
        ("Call-ID", "c@x"),
        ("CSeq", "1 INVITE"),
    ]
    return Response(code, headers=base + [(name, value) for value in values])


INVITE = Request("INVITE", "sip:bob@example.com", [("CSeq", "1 INVITE")], body=b"v=0\r\n")


class CredentialsPolicyTests(SynchronousTestCase):
    """Issue 14 finding 4: which challenges `Credentials` answers, and with what."""

    def test_unknown_realm_refused_with_hint(self) -> None:
        """RFC 3261 §22.2 leaves the realm choice to the UAC: a callee's realm is not ours."""
        credentials = Credentials("alice", SECRET)
        with self.assertRaises(DigestRefused) as caught:
            credentials.answer(
                challenged(401, 'Digest realm="evil.example", nonce="n", qop="auth"'), INVITE
            )
        text = str(caught.exception)
        self.assertIn("realm 'evil.example'", text)
        self.assertIn("--auth-realm 'evil.example'", text)
        self.assertNotIn(SECRET, text)

    def test_registrar_challenge_binds_its_realm(self) -> None:
        """The first REGISTER challenge binds the registrar's realm; calls may answer it then,
        and no other realm (a later registrar challenge for another realm included)."""
        credentials = Credentials("alice", SECRET)
        response = challenged(401, 'Digest realm="example.com", nonce="n", qop="auth"')
        self.assertFalse(credentials.allows("example.com"))
        header, challenge = credentials.choose(response, registrar=True)
        self.assertEqual((header, challenge.realm), ("Authorization", "example.com"))
        self.assertEqual(credentials.registrar_realm, "example.com")
        name, value = credentials.answer(response, INVITE)
        self.assertEqual(name, "Authorization")
        self.assertIn('realm="example.com"', value)
        other = challenged(401, 'Digest realm="other.example", nonce="n", qop="auth"')
        self.assertRaises(DigestRefused, credentials.choose, other, registrar=True)
        self.assertRaises(DigestRefused, credentials.answer, other, INVITE)

    def test_configured_realms_and_table(self) -> None:
        """--auth-realm answers with the AOR's password; the table with its own account."""
        credentials = Credentials(
            "alice", SECRET, realms=["proxy.example"], table={"carrier": ("acct", "pw2")}
        )
        _, value = credentials.answer(
            challenged(407, 'Digest realm="proxy.example", nonce="n", qop="auth"'), INVITE
        )
        self.assertEqual(params(value)["username"], "alice")
        name, value = credentials.answer(
            challenged(407, 'Digest realm="carrier", nonce="n", qop="auth"'), INVITE
        )
        got = params(value)
        self.assertEqual((name, got["username"]), ("Proxy-Authorization", "acct"))

        def md5(text: str) -> str:
            return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

        ha1 = md5("acct:carrier:pw2")
        ha2 = md5("INVITE:sip:bob@example.com")
        expected = md5(f"{ha1}:n:{got['nc']}:{got['cnonce']}:auth:{ha2}")
        self.assertEqual(got["response"], expected)

    def test_table_only_does_not_bind_a_registrar_realm(self) -> None:
        """Without a password for the AOR, only the table's realms are answered."""
        credentials = Credentials("alice", table={"carrier": ("acct", "pw2")})
        response = challenged(401, 'Digest realm="example.com", nonce="n", qop="auth"')
        self.assertRaises(DigestRefused, credentials.choose, response, registrar=True)
        self.assertIsNone(credentials.registrar_realm)

    def test_strongest_algorithm_in_any_order(self) -> None:
        """RFC 8760 §2.4 / RFC 7616 §3.7: SHA-512-256 > SHA-256 > MD5, whatever the order."""
        offers = {
            "MD5": 'Digest realm="r", nonce="md5", algorithm=MD5, qop="auth"',
            "SHA-256": 'Digest realm="r", nonce="sha256", algorithm=SHA-256, qop="auth"',
            "SHA-512-256": 'Digest realm="r", nonce="sha512", algorithm=SHA-512-256, qop="auth"',
        }
        credentials = Credentials("alice", SECRET, realms=["r"])
        strength = list(offers).index  # weakest first
        for order in itertools.permutations(offers):
            for chosen in (order, order[:2]):
                want = max(chosen, key=strength)
                response = challenged(401, *(offers[name] for name in chosen))
                _, challenge = credentials.choose(response)
                self.assertEqual(challenge.algorithm, want, order)
                self.assertEqual(
                    DigestClient.select(
                        Challenge.parse(offers[name]) for name in chosen
                    ).algorithm,
                    want,
                )
                _, value = credentials.answer(response, INVITE)
                self.assertEqual(params(value)["algorithm"], want)

    def test_qop_less_md5_refused_by_default(self) -> None:
        """RFC 2069 compatibility (RFC 7616 §3.4: qop-less, no cnonce) only when allowed."""
        legacy = challenged(401, 'Digest realm="r", nonce="n"')
        with self.assertRaises(DigestRefused) as caught:
            Credentials("alice", SECRET, realms=["r"]).answer(legacy, INVITE)
        self.assertIn("--allow-legacy-digest", str(caught.exception))
        sess = challenged(401, 'Digest realm="r", nonce="n", algorithm=MD5-sess')
        self.assertRaises(
            DigestRefused, Credentials("alice", SECRET, realms=["r"]).answer, sess, INVITE
        )
        allowed = Credentials("alice", SECRET, realms=["r"], allow_legacy_digest=True)
        _, value = allowed.answer(legacy, INVITE)
        self.assertNotIn("qop", params(value))

    def test_qop_less_md5_skipped_for_a_better_offer(self) -> None:
        """A legacy challenge next to a qop one is not a refusal: the qop one is answered."""
        response = challenged(
            401, 'Digest realm="r", nonce="old"', 'Digest realm="r", nonce="new", qop="auth"'
        )
        _, challenge = Credentials("alice", SECRET, realms=["r"]).choose(response)
        self.assertEqual(challenge.nonce, "new")

    def test_registrar_legacy_challenge_does_not_bind(self) -> None:
        credentials = Credentials("alice", SECRET)
        legacy = challenged(401, 'Digest realm="r", nonce="n"')
        self.assertRaises(DigestRefused, credentials.choose, legacy, registrar=True)
        self.assertIsNone(credentials.registrar_realm)

    def test_allowed_realm_preferred_over_stronger_refused_one(self) -> None:
        """An unallowed realm never wins, however strong its algorithm."""
        response = challenged(
            407,
            'Digest realm="evil", nonce="e", algorithm=SHA-512-256, qop="auth"',
            'Digest realm="proxy", nonce="p", algorithm=MD5, qop="auth"',
        )
        _, challenge = Credentials("alice", SECRET, realms=["proxy"]).choose(response)
        self.assertEqual(challenge.realm, "proxy")

    def test_non_ascii_challenge_is_a_clean_failure(self) -> None:
        """Issue 14 finding 8: an undecodable byte (a lone surrogate after the parser's
        surrogateescape) or any non-ASCII text is a DigestError, never UnicodeEncodeError."""
        for realm in ("r\udcff", "r\u00e9alm"):
            value = f'Digest realm="{realm}", nonce="n", qop="auth"'
            self.assertRaises(DigestError, Challenge.parse, value)
            credentials = Credentials("alice", SECRET, realms=[realm])
            with self.assertRaises(DigestError) as caught:
                credentials.answer(challenged(401, value), INVITE)
            self.assertIn("non-ASCII", str(caught.exception))
        by_hand = Challenge(realm="r\udcff", nonce="n", qop=("auth",))
        self.assertRaises(DigestError, DigestClient("u", "p").authorization, by_hand, "GET", "/")

    def test_challenges_per_response_bounded(self) -> None:
        """Only the first MAX_CHALLENGES are read (remote input)."""
        values = ['Digest realm="r", nonce="x", algorithm=SHA-1'] * MAX_CHALLENGES
        values.append('Digest realm="r", nonce="late", qop="auth"')
        with self.assertRaises(DigestError):
            Credentials("alice", SECRET, realms=["r"]).choose(challenged(401, *values))

    def test_repr_hides_password(self) -> None:
        credentials = Credentials("alice", SECRET, table={"c": ("u", SECRET + "2")})
        self.assertNotIn(SECRET, repr(credentials))
        self.assertIn("alice", repr(credentials))
