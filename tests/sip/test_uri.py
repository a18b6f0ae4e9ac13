"""Tests for voiptwisted.sip.uri: SipURI, NetworkAddress, CallerID (RFC 3261 §19.1)."""

from __future__ import annotations

import copy
import ipaddress
import pickle

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from voiptwisted.sip.uri import MAX_URI_LENGTH, CallerID, InvalidURI, NetworkAddress, SipURI

SECRET = "s3cr3t-Pw"


class ReferenceExamplesTests(SynchronousTestCase):
    """The reference API's doctest outputs, verbatim."""

    def test_default_port_made_explicit(self) -> None:
        """RFC 3261 §19.1.2: sip: defaults to port 5060."""
        self.assertEqual(SipURI.parse("sip:alice@example.com"), "sip:alice@example.com:5060")
        self.assertEqual(
            repr(SipURI.parse("sip:alice@example.com")), "'sip:alice@example.com:5060'"
        )

    def test_plus_escaped_and_sips_port(self) -> None:
        uri = SipURI.parse("sips:+15551234567@carrier.com:5061")
        self.assertEqual(uri, "sips:%2B15551234567@carrier.com:5061")
        self.assertEqual(uri.user, "+15551234567")

    def test_ipv6_host_in_brackets(self) -> None:
        """RFC 2732 / RFC 3261 §19.1.2: IPv6 references are bracketed; host is bare."""
        uri = SipURI.parse("sip:alice@[::1]:5060")
        self.assertEqual(uri, "sip:alice@[::1]:5060")
        self.assertEqual(uri.host, ipaddress.IPv6Address("::1"))

    def test_callerid_str(self) -> None:
        value = '"08001234567" <sip:08001234567@telefonica.de>;tag=abc'
        self.assertEqual(str(CallerID(value)), value)

    def test_callerid_repr_masks_user(self) -> None:
        self.assertEqual(
            repr(CallerID('"08001234567" <sip:08001234567@telefonica.de>;tag=abc')),
            "***4567@telefonica.de",
        )
        self.assertEqual(repr(CallerID("sip:alice@example.com")), "*lice@example.com")


class SipURIParseTests(SynchronousTestCase):
    def test_sips_default_port(self) -> None:
        """RFC 3261 §19.1.2: sips: defaults to port 5061."""
        self.assertEqual(SipURI.parse("sips:bob@example.com").port, 5061)

    def test_scheme_case_insensitive(self) -> None:
        """RFC 3261 §19.1.4: the scheme compares case-insensitively."""
        uri = SipURI.parse("SIP:bob@example.com")
        self.assertEqual(uri.scheme, "sip")
        self.assertEqual(uri, "sip:bob@example.com:5060")

    def test_ipv4_host_is_address_object(self) -> None:
        uri = SipURI.parse("sip:bob@192.0.2.4:5070")
        self.assertEqual(uri.host, ipaddress.IPv4Address("192.0.2.4"))
        self.assertEqual(uri.port, 5070)

    def test_hostname_is_str(self) -> None:
        uri = SipURI.parse("sip:registrar.example.com")
        self.assertIsInstance(uri.host, str)
        self.assertIsNone(uri.user)
        self.assertEqual(uri, "sip:registrar.example.com:5060")

    def test_parameters_and_flags(self) -> None:
        """RFC 3261 §19.1.1: uri-parameters, with valueless flags such as lr."""
        uri = SipURI.parse("sip:p1.example.com;lr;transport=tcp;ob;Foo=Bar")
        self.assertEqual(
            uri.parameters, {"lr": None, "transport": "tcp", "ob": None, "foo": "Bar"}
        )
        self.assertEqual(uri, "sip:p1.example.com:5060;lr;transport=tcp;ob;foo=Bar")

    def test_headers(self) -> None:
        """RFC 3261 §19.1.1: headers after '?', escaped values decoded."""
        uri = SipURI.parse("sip:bob@example.com?Subject=hello%20there&Priority=urgent")
        self.assertEqual(uri.headers, {"Subject": "hello there", "Priority": "urgent"})
        self.assertEqual(uri, "sip:bob@example.com:5060?Subject=hello%20there&Priority=urgent")

    def test_escaped_user(self) -> None:
        """RFC 3261 §19.1.2: escaped ':' and '@' in the user part are decoded."""
        uri = SipURI.parse("sip:sips%3Auser%40example.com@example.net")
        self.assertEqual(uri.user, "sips:user@example.com")
        self.assertEqual(uri.host, "example.net")
        self.assertEqual(SipURI.parse(uri).user, "sips:user@example.com")

    def test_user_with_semicolon(self) -> None:
        """RFC 3261 §25.1: ';' is a user-unreserved character of the user part."""
        uri = SipURI.parse("sip:user;par=u%40example.net@example.com")
        self.assertEqual(uri.user, "user;par=u@example.net")
        self.assertEqual(uri.parameters, {})
        self.assertEqual(uri, "sip:user;par=u%40example.net@example.com:5060")

    def test_transport_property(self) -> None:
        self.assertEqual(SipURI.parse("sip:a@example.com").transport, "TLS")
        self.assertEqual(SipURI.parse("sip:a@example.com;transport=tcp").transport, "TCP")
        self.assertEqual(SipURI.parse("sip:a@example.com;transport=udp").transport, "UDP")
        self.assertEqual(SipURI.parse("sips:a@example.com;transport=tcp").transport, "TLS")

    def test_maddr_overrides_host(self) -> None:
        """RFC 3261 §19.1.1: maddr gives the server address to contact."""
        uri = SipURI.parse("sip:a@example.com:5080;maddr=192.0.2.9")
        self.assertEqual(uri.maddr, NetworkAddress(ipaddress.IPv4Address("192.0.2.9"), 5080))
        uri6 = SipURI.parse("sip:a@example.com;maddr=[2001:db8::1]")
        self.assertEqual(str(uri6.maddr), "[2001:db8::1]:5060")
        self.assertEqual(
            SipURI.parse("sip:a@example.com").maddr, NetworkAddress("example.com", 5060)
        )

    def test_ttl(self) -> None:
        self.assertEqual(SipURI.parse("sip:a@example.com;ttl=15").ttl, 15)
        self.assertIsNone(SipURI.parse("sip:a@example.com").ttl)

    def test_constructor_from_parts(self) -> None:
        uri = SipURI("sip", "10.0.0.1", user="bob", parameters={"transport": "tcp"})
        self.assertEqual(uri, "sip:bob@10.0.0.1:5060;transport=tcp")
        self.assertEqual(uri.host, ipaddress.IPv4Address("10.0.0.1"))
        self.assertEqual(SipURI("sips", "::1", user="bob"), "sips:bob@[::1]:5061")

    def test_single_string_argument_parses(self) -> None:
        self.assertEqual(SipURI("sip:bob@example.com"), "sip:bob@example.com:5060")

    def test_with_parameters_and_replace(self) -> None:
        uri = SipURI.parse("sip:bob@example.com;transport=udp")
        self.assertEqual(
            uri.with_parameters(transport="tcp", lr=None),
            "sip:bob@example.com:5060;transport=tcp;lr",
        )
        self.assertEqual(uri.without_parameters("transport"), "sip:bob@example.com:5060")
        self.assertEqual(uri.replace(port=5070), "sip:bob@example.com:5070;transport=udp")
        self.assertEqual(uri.replace(scheme="sips").port, 5061)
        self.assertRaises(TypeError, uri.replace, colour="red")

    def test_aor_keeps_plus(self) -> None:
        """RFC 3261 §19.1.4: '+' is reserved, so the AOR keeps it unescaped."""
        uri = SipURI.parse("sip:+49301234@example.com:5080;transport=tcp")
        self.assertEqual(uri.aor, "sip:+49301234@example.com")
        self.assertEqual(SipURI.parse("sips:[::1]").aor, "sips:[::1]")

    def test_parameters_read_only(self) -> None:
        """The str value cannot go stale: parts are read-only, copies via replace()."""
        uri = SipURI.parse("sip:bob@example.com;lr?x=y")
        with self.assertRaises(TypeError):
            uri.parameters["transport"] = "tcp"  # type: ignore[index]
        with self.assertRaises(TypeError):
            uri.headers["x"] = "z"  # type: ignore[index]
        self.assertEqual(uri.parameters, {"lr": None})

    def test_parse_of_parsed_uri_keeps_it(self) -> None:
        uri = SipURI.parse(f"sip:bob:{SECRET}@example.com")
        self.assertIs(SipURI.parse(uri), uri)
        self.assertEqual(SipURI(uri).password, SECRET)

    def test_copy_and_pickle_keep_parts(self) -> None:
        uri = SipURI.parse(f"sip:bob:{SECRET}@example.com;lr?x=y")
        for clone in (copy.copy(uri), copy.deepcopy(uri), pickle.loads(pickle.dumps(uri))):  # noqa: S301
            self.assertEqual(clone, uri)
            self.assertEqual(clone.password, SECRET)
            self.assertEqual(clone.parameters, {"lr": None})
            self.assertEqual(clone.headers, {"x": "y"})


class WireFormTests(SynchronousTestCase):
    """``SipURI.wire``: the URI as the user gave it, for Request-URI and To (issue 10)."""

    def test_plus_unescaped_and_no_port_added(self) -> None:
        """RFC 3261 §25.1: ``+`` is legal unescaped in the user part; RFC 3263 §4.2: an
        added port would turn off SRV resolution, so only a given port is written."""
        uri = SipURI.parse("sip:+4930123456@carrier.example")
        self.assertEqual(uri.wire, "sip:+4930123456@carrier.example")
        self.assertTrue(uri.equivalent(uri.wire))

    def test_given_port_parameters_and_headers_kept(self) -> None:
        uri = SipURI.parse("sips:+1@[::1]:5070;transport=tcp?subject=a%20b")
        self.assertEqual(uri.wire, "sips:+1@[::1]:5070;transport=tcp?subject=a%20b")

    def test_no_password(self) -> None:
        self.assertEqual(SipURI.parse("sip:a:secret@h;lr").wire, "sip:a@h;lr")


class EquivalenceTests(SynchronousTestCase):
    """RFC 3261 §19.1.4 URI comparison, with the RFC's own examples."""

    def test_rfc3261_equivalent_pairs(self) -> None:
        """RFC 3261 §19.1.4: the listed equivalent URIs compare equal."""
        for a, b in [
            ("sip:%61lice@atlanta.com;transport=TCP", "sip:alice@AtLanTa.CoM;Transport=tcp"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
            (
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            ),
        ]:
            self.assertTrue(SipURI.parse(a).equivalent(b), (a, b))
            self.assertTrue(SipURI.parse(b).equivalent(a), (b, a))

    def test_rfc3261_non_equivalent_pairs(self) -> None:
        """RFC 3261 §19.1.4: the listed non-equivalent URIs differ."""
        for a, b in [
            ("SIP:ALICE@AtLanTa.CoM;Transport=udp", "sip:alice@AtLanTa.CoM;Transport=UDP"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:6000;transport=tcp"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com?Subject=next%20meeting"),
            ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
            ("sip:carol@chicago.com;security=on", "sip:carol@chicago.com;security=off"),
            ("sip:bob@biloxi.com", "sips:bob@biloxi.com"),
            ("sip:bob@biloxi.com", "not a uri"),
        ]:
            self.assertFalse(SipURI.parse(a).equivalent(b), (a, b))

    def test_default_port_deviation(self) -> None:
        """Deviation from RFC 3261 §19.1.4: the default port is always made explicit."""
        self.assertTrue(SipURI.parse("sip:bob@biloxi.com").equivalent("sip:bob@biloxi.com:5060"))


class PasswordSecurityTests(SynchronousTestCase):
    """SECURITY DEVIATION from the reference: the password is only in .password."""

    def test_password_not_in_str_or_repr(self) -> None:
        uri = SipURI.parse(f"sip:alice:{SECRET}@example.com")
        self.assertEqual(uri.password, SECRET)
        self.assertEqual(uri, "sip:alice@example.com:5060")
        self.assertNotIn(SECRET, str(uri))
        self.assertNotIn(SECRET, repr(uri))
        self.assertNotIn(SECRET, f"{uri}")
        self.assertIsNone(uri.without_password().password)

    def test_password_not_in_constructed_uri(self) -> None:
        uri = SipURI("sip", "example.com", user="alice", password=SECRET)
        self.assertNotIn(SECRET, str(uri) + repr(uri))
        self.assertNotIn(SECRET, uri.with_parameters(lr=None))

    def test_password_redacted_in_errors(self) -> None:
        bad_inputs = [
            f"sip:alice:{SECRET}@",
            f"sip:alice:{SECRET}@[::1",
            f"sip:alice:{SECRET}@host:99999",
            f"sip:alice:{SECRET}@bad host",
            f"sip:alice:{SECRET}@example.com;maddr=",
            f"sip:alice:p@{SECRET}@example.com",
            f"alice:{SECRET}@example.com",
            f"tel:alice:{SECRET}@x",
            f"sip:alice:{SECRET}@-x.com",
            f"sip:alice:{SECRET}",
            f"sip:alice:{SECRET};transport=tcp",
        ]
        for value in bad_inputs:
            with self.assertRaises(InvalidURI) as caught:
                SipURI.parse(value)
            self.assertNotIn(SECRET, str(caught.exception), value)
            self.assertNotIn(SECRET, repr(caught.exception), value)

    def test_callerid_never_shows_password(self) -> None:
        caller = CallerID(f"<sip:alice:{SECRET}@example.com>;tag=1")
        self.assertEqual(caller.user, "alice")
        self.assertNotIn(SECRET, repr(caller))


class SipURIRejectsTests(SynchronousTestCase):
    """RFC 3261 §25.1 grammar: malformed URIs raise InvalidURI (a ValueError)."""

    def test_invalid_inputs(self) -> None:
        for value in [
            "",
            "sip:",
            "sip:alice@",
            "sip:@example.com",
            "alice@example.com",
            "http://example.com",
            "tel:+15551234567",
            "sip:alice@example.com:0",
            "sip:alice@example.com:65536",
            "sip:alice@example.com:123456",
            "sip:alice@example.com:",
            "sip:alice@[::1",
            "sip:alice@[::1]]",
            "sip:alice@[not-v6]",
            "sip:alice@[fe80::1%25eth0]",
            "sip:alice@::1",
            "sip:alice@1.2.3.256",
            "sip:alice@999.1.1.1",
            "sip:alice@-example.com",
            "sip:alice@example-.com",
            "sip:alice@exa..mple.com",
            "sip:alice@exa_mple.com",
            "sip:alice@example.com;",
            "sip:alice@example.com;=x",
            "sip:alice@example.com;a=",
            "sip:alice@example.com;ttl=300",
            "sip:alice@example.com;ttl",
            "sip:alice@example.com;maddr=-bad-",
            "sip:alice@example.com?",
            "sip:alice@example.com?noequals",
            "sip:al ice@example.com",
            "sip:alice@example.com bad",
            "sip:al%zzice@example.com",
            "sip:alice@example.com\r\n",
            "sip:alice@exämple.com",
            "<sip:alice@example.com>",
        ]:
            with self.assertRaises(InvalidURI, msg=value):
                SipURI.parse(value)

    def test_invalid_uri_is_value_error(self) -> None:
        self.assertTrue(issubclass(InvalidURI, ValueError))

    def test_error_messages_say_what(self) -> None:
        cases = {
            "sip:alice@[::1": "unclosed IPv6 bracket",
            "sip:alice@example.com:70000": "port",
            "sip:alice@1.2.3.256": "IPv4",
        }
        for value, words in cases.items():
            with self.assertRaises(InvalidURI) as caught:
                SipURI.parse(value)
            self.assertIn(words, str(caught.exception))

    def test_non_str_rejected(self) -> None:
        for value in (None, b"sip:a@b.com", 5):
            self.assertRaises(InvalidURI, SipURI.parse, value)

    def test_too_long_rejected(self) -> None:
        value = "sip:a@example.com;x=" + "y" * MAX_URI_LENGTH
        with self.assertRaises(InvalidURI) as caught:
            SipURI.parse(value)
        self.assertLess(len(str(caught.exception)), 200)

    def test_constructor_validates(self) -> None:
        self.assertRaises(InvalidURI, SipURI, "http", "example.com")
        self.assertRaises(InvalidURI, SipURI, "sip", "")
        self.assertRaises(InvalidURI, SipURI, "sip", "bad host")
        self.assertRaises(InvalidURI, SipURI, "sip", "example.com", port=70000)
        self.assertRaises(InvalidURI, SipURI, "sip", "example.com", port=True)
        self.assertRaises(InvalidURI, SipURI, "sip", "example.com", password="x")
        self.assertRaises(InvalidURI, SipURI, "sip", "example.com", parameters={"": "x"})
        self.assertRaises(InvalidURI, SipURI, "sip", "example.com", parameters={"maddr": "-"})

    def test_long_garbage_is_fast_enough_to_finish(self) -> None:
        """Pathological inputs must not backtrack exponentially (each returns or raises)."""
        for value in [
            "sip:" + "a" * 4000 + "@" + "b-" * 1500,
            "sip:" + "a;" * 3000,
            "sip:a@b.com;" + "x=y;" * 1500 + "?",
            "sip:" + "%4" * 3000,
        ]:
            self.assertRaises(InvalidURI, SipURI.parse, value)


class NetworkAddressTests(SynchronousTestCase):
    def test_parse_forms(self) -> None:
        self.assertEqual(
            NetworkAddress.parse("192.0.2.1:5060"),
            NetworkAddress(ipaddress.IPv4Address("192.0.2.1"), 5060),
        )
        self.assertEqual(
            NetworkAddress.parse("[::1]:5061"), NetworkAddress(ipaddress.IPv6Address("::1"), 5061)
        )
        self.assertEqual(NetworkAddress.parse("example.com"), NetworkAddress("example.com", 5060))
        self.assertEqual(NetworkAddress.parse("example.com", 5061).port, 5061)
        self.assertEqual(
            NetworkAddress.parse("2001:db8::1").host, ipaddress.ip_address("2001:db8::1")
        )

    def test_str(self) -> None:
        self.assertEqual(str(NetworkAddress.parse("192.0.2.1:5060")), "192.0.2.1:5060")
        self.assertEqual(str(NetworkAddress.parse("[::1]:5061")), "[::1]:5061")

    def test_is_a_tuple(self) -> None:
        host, port = NetworkAddress.parse("127.0.0.1:5070")
        self.assertEqual((str(host), port), ("127.0.0.1", 5070))

    def test_invalid(self) -> None:
        for value in ["", "[::1", "[::1]x", "host:", "host:abc", "host:99999", "a b", "[::1]:0"]:
            self.assertRaises(InvalidURI, NetworkAddress.parse, value)


class CallerIDTests(SynchronousTestCase):
    """From/To values (RFC 3261 §20.20, §20.39, §20.10 name-addr / addr-spec)."""

    def test_name_addr(self) -> None:
        caller = CallerID('"Alice \\"A\\" Smith" <sip:alice@example.com:5080>;tag=88sja8x')
        self.assertEqual(caller.display_name, 'Alice "A" Smith')
        self.assertEqual(caller.user, "alice")
        self.assertEqual(caller.host, "example.com:5080")
        self.assertEqual(caller.tag, "88sja8x")
        self.assertEqual(caller.uri, "sip:alice@example.com:5080")

    def test_token_display_name(self) -> None:
        caller = CallerID("Bob <sips:bob@biloxi.example.com>")
        self.assertEqual(caller.display_name, "Bob")
        self.assertEqual(caller.uri.port, 5061)
        self.assertIsNone(caller.tag)

    def test_addr_spec_params_are_header_params(self) -> None:
        """RFC 3261 §20.10: without <>, ';' parameters belong to the header, not the URI."""
        caller = CallerID("sip:carol@chicago.example.com;tag=xyz")
        self.assertEqual(caller.uri, "sip:carol@chicago.example.com:5060")
        self.assertEqual(caller.uri.parameters, {})
        self.assertEqual(caller.tag, "xyz")
        self.assertIsNone(caller.display_name)

    def test_uri_params_inside_brackets_not_tag(self) -> None:
        caller = CallerID("<sip:carol@chicago.example.com;transport=tcp>;tag=1")
        self.assertEqual(caller.uri.parameters, {"transport": "tcp"})
        self.assertEqual(caller.tag, "1")

    def test_tel_uri(self) -> None:
        caller = CallerID("<tel:+15551234567>;tag=a")
        self.assertIsNone(caller.uri)
        self.assertIsNone(caller.user)
        self.assertEqual(repr(caller), "****")

    def test_malformed_sip_uri_raises_invalid_uri(self) -> None:
        self.assertRaises(InvalidURI, lambda: CallerID("<sip:alice@>").uri)

    def test_short_user_and_missing_parts(self) -> None:
        self.assertEqual(repr(CallerID("<sip:bob@example.com>")), "bob@example.com")
        self.assertEqual(repr(CallerID("<sip:example.com>")), "****")
        self.assertEqual(repr(CallerID("")), "****")

    def test_is_str(self) -> None:
        caller = CallerID("<sip:bob@example.com>")
        self.assertIsInstance(caller, str)
        self.assertEqual(caller, "<sip:bob@example.com>")


# --- property-based round trip -------------------------------------------------------

_text = st.text(
    st.characters(blacklist_categories=("Cs",), min_codepoint=1), min_size=1, max_size=12
)
_label = st.from_regex(r"[a-z0-9]{1,6}(-[a-z0-9]{1,4})?", fullmatch=True)
_toplabel = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
_hostname = st.builds(
    lambda labels, top: ".".join([*labels, top]), st.lists(_label, max_size=3), _toplabel
)
_host = st.one_of(_hostname, st.ip_addresses(v=4), st.ip_addresses(v=6))
_param_name = st.from_regex(r"[a-z][a-z0-9\-.!~*'()]{0,8}", fullmatch=True).filter(
    lambda name: name not in ("maddr", "ttl", "transport")
)


class RoundTripPropertyTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        scheme=st.sampled_from(["sip", "sips"]),
        host=_host,
        user=st.none() | _text,
        port=st.none() | st.integers(1, 65535),
        parameters=st.dictionaries(_param_name, st.none() | _text, max_size=4),
        headers=st.dictionaries(_text, st.text(max_size=8), max_size=3),
        transport=st.none() | st.sampled_from(["udp", "tcp", "tls", "ws"]),
    )
    def test_parts_to_str_to_parse(
        self, scheme, host, user, port, parameters, headers, transport
    ) -> None:
        """Building from parts, serialising and parsing gives the same parts back."""
        if transport is not None:
            parameters = {**parameters, "transport": transport}
        uri = SipURI(scheme, host, user=user, port=port, parameters=parameters, headers=headers)
        parsed = SipURI.parse(str(uri))
        self.assertEqual(parsed, uri)
        self.assertEqual(parsed.scheme, scheme)
        self.assertEqual(parsed.host, uri.host)
        self.assertEqual(parsed.user, user)
        default_port = {"sip": 5060, "sips": 5061}[scheme]
        self.assertEqual(parsed.port, port if port is not None else default_port)
        self.assertEqual(parsed.parameters, parameters)
        self.assertEqual(parsed.headers, headers)
        self.assertIsNone(parsed.password)

    @settings(max_examples=200, deadline=None)
    @given(st.text(max_size=60) | st.from_regex(r"sips?:[^\s]{0,40}", fullmatch=True))
    def test_arbitrary_text_only_invalid_uri(self, value: str) -> None:
        """Any input either parses to a str that re-parses identically or raises InvalidURI."""
        try:
            uri = SipURI.parse(value)
        except InvalidURI:
            return
        self.assertEqual(SipURI.parse(str(uri)), uri)


class CallerIDPropertyTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(
        st.text(max_size=60)
        | st.from_regex(r'("[^"]{0,8}" )?<?sips?:[a-z:@;=<>"\\]{0,20}>?(;tag=[a-z]{0,4})?')
    )
    def test_any_value_never_crashes(self, value: str) -> None:
        """Every accessor of an arbitrary From/To value returns or raises InvalidURI."""
        caller = CallerID(value)
        for name in ("display_name", "user", "host", "tag"):
            result = getattr(caller, name)
            self.assertTrue(result is None or isinstance(result, str), name)
        self.assertIsInstance(repr(caller), str)
        try:
            uri = caller.uri
        except InvalidURI:
            return
        self.assertTrue(uri is None or isinstance(uri, SipURI))
