"""Webhook destinations: the checks as pure functions, and delivery to the address that was checked.

The network tests talk only to servers of their own on the loopback interface.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from resizer.destinations import (Allowlist, CallbackUrl, DeliveryError, Destination, check, check_destination,
                                  parse_allowlist, parse_url, post)
from resizer.errors import InvalidParameter
from settings import Settings

INVALID_URL = "Invalid parameter 'callback_url': it must be a valid http(s) URL."
NAME = "hooks.example.test"  # .test is reserved (RFC 2606): no real DNS answers it
NOBODY = Allowlist()


def answers(*addresses: str):
    """A resolver shaped like socket.getaddrinfo that answers the given addresses, and counts its calls."""
    def resolve(host, port, family=0, type=0, proto=0, flags=0):
        resolve.calls.append(host)
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                 (a, port)) for a in addresses]
    resolve.calls = []
    return resolve


def refuses(*_args, **_kwargs):
    raise AssertionError("the resolver must not be called")


# -- parsing -----------------------------------------------------------------------------------
def test_parse_url_fills_in_the_default_port_and_keeps_path_and_query():
    assert parse_url("https://Hooks.Example.COM/cb?job=1#frag") == CallbackUrl("https", "hooks.example.com", 443,
                                                                              "/cb?job=1")
    assert parse_url("http://hooks.example.com") == CallbackUrl("http", "hooks.example.com", 80, "/")
    assert parse_url("http://[2001:db8::1]:8080/x") == CallbackUrl("http", "2001:db8::1", 8080, "/x")


@pytest.mark.parametrize("url", [
    "", "not a url", "hooks.example.com/cb", "http://", "http:///path", "http://:80/", "http://[::1/",
    "http://hooks.example.com:99999/", "http://hooks.example.com:port/", "http://hooks.example.com:0/",
    "ftp://hooks.example.com/", "file:///etc/passwd", "gopher://hooks.example.com/", "javascript:alert(1)",
    "data:text/plain,hi", "redis://127.0.0.1:6379/",
])
def test_malformed_urls_and_other_schemes_are_refused_with_todays_message(url):
    with pytest.raises(InvalidParameter) as raised:
        check(url, NOBODY, refuses)
    assert raised.value.message == INVALID_URL


def test_allowlist_holds_hosts_and_networks():
    allow = parse_allowlist(" Hooks.Internal , 10.0.0.0/8,, 192.168.1.7, fd00::/8, not/a/network ")
    assert allow.hosts == {"hooks.internal", "10.0.0.0/8", "192.168.1.7", "fd00::/8", "not/a/network"}
    assert [str(n) for n in allow.networks] == ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"]
    assert parse_allowlist("") == Allowlist()


def test_host_header_names_the_port_only_when_it_is_not_the_default():
    assert parse_url("https://h.example:443/").host_header == "h.example"
    assert parse_url("http://h.example:8080/").host_header == "h.example:8080"
    assert parse_url("https://[2001:db8::1]/").host_header == "[2001:db8::1]"
    assert parse_url("http://[2001:db8::1]:81/").host_header == "[2001:db8::1]:81"


# -- the address check -------------------------------------------------------------------------
@pytest.mark.parametrize("address", ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"])
def test_a_public_address_is_accepted_and_is_the_one_to_connect_to(address):
    resolver = answers(address)
    dest = check("https://hooks.example.com/cb", NOBODY, resolver)
    assert dest == Destination("https", "hooks.example.com", 443, "/cb", None, (address,))
    assert dest.address == address
    assert resolver.calls == ["hooks.example.com"]


def test_the_first_answer_is_the_address_and_duplicates_are_dropped():
    dest = check("http://hooks.example.com/", NOBODY, answers("93.184.216.34", "93.184.216.35", "93.184.216.34"))
    assert dest.addresses == ("93.184.216.34", "93.184.216.35")
    assert dest.address == "93.184.216.34"


@pytest.mark.parametrize("address", [
    "10.1.2.3", "172.16.0.1", "192.168.1.1",  # private
    "127.0.0.1", "::1",  # loopback
    "169.254.169.254", "fe80::1",  # link-local (cloud metadata)
    "0.0.0.0", "::", "100.64.0.1", "fc00::1",  # unspecified, carrier-grade NAT, unique local
    "224.0.0.1", "239.1.1.1", "ff0e::1",  # multicast, which Python calls global
    "::ffff:127.0.0.1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::",  # IPv4 loopback/link-local inside IPv6
])
def test_a_non_public_address_is_refused(address):
    with pytest.raises(InvalidParameter) as raised:
        check("https://hooks.example.com/cb", NOBODY, answers(address))
    assert raised.value.message == (
        f"Invalid parameter 'callback_url': hooks.example.com resolves to a non-public address "
        f"({ipaddress.ip_address(address)}); "
        "callbacks may only go to public hosts.")


@pytest.mark.parametrize("addresses", [("93.184.216.34", "10.0.0.1"), ("10.0.0.1", "93.184.216.34"),
                                       ("2606:2800:220:1::1", "::1")])
def test_one_non_public_answer_among_public_ones_is_enough_to_refuse(addresses):
    with pytest.raises(InvalidParameter, match="non-public"):
        check("http://hooks.example.com/", NOBODY, answers(*addresses))


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/", "http://[::1]/", "http://[fe80::1]/"])
def test_a_literal_address_is_checked_without_resolving(url):
    with pytest.raises(InvalidParameter, match="non-public"):
        check(url, NOBODY, refuses)
    assert check("http://93.184.216.34/", NOBODY, refuses).address == "93.184.216.34"


def test_a_host_that_does_not_resolve_is_refused():
    def fails(*_a, **_k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    for resolver in (fails, answers()):
        with pytest.raises(InvalidParameter) as raised:
            check("https://nowhere.example.test/", NOBODY, resolver)
        assert raised.value.message == ("Invalid parameter 'callback_url': "
                                        "the host nowhere.example.test does not resolve.")


def test_an_allowlisted_host_may_resolve_anywhere_but_is_still_resolved_once():
    resolver = answers("127.0.0.1", "10.0.0.5")
    dest = check("http://receiver.internal:8080/hook", parse_allowlist("receiver.internal"), resolver)
    assert (dest.address, dest.addresses) == ("127.0.0.1", ("127.0.0.1", "10.0.0.5"))
    assert resolver.calls == ["receiver.internal"]
    with pytest.raises(InvalidParameter, match="non-public"):  # the name is allowed, not its neighbours
        check("http://other.internal/", parse_allowlist("receiver.internal"), answers("10.0.0.5"))


def test_an_allowlisted_network_covers_its_own_addresses_only():
    allow = parse_allowlist("10.0.0.0/8,::1")
    assert check("http://hooks.example.com/", allow, answers("10.9.8.7", "::1")).address == "10.9.8.7"
    with pytest.raises(InvalidParameter, match=r"\(192\.168\.1\.1\)"):
        check("http://hooks.example.com/", allow, answers("10.9.8.7", "192.168.1.1"))


def test_an_international_name_is_resolved_and_sent_in_its_ascii_form():
    resolver = answers("93.184.216.34")
    dest = check("https://bücher.example/", NOBODY, resolver)
    assert resolver.calls == ["xn--bcher-kva.example"]
    assert dest.host_header == "xn--bcher-kva.example"


def test_check_destination_keeps_todays_order_of_refusals(monkeypatch):
    on = Settings(webhook_secret="s", webhook_allowlist="10.0.0.0/8")
    with pytest.raises(InvalidParameter) as raised:
        check_destination("ftp://hooks.example.com/", Settings())  # a bad URL is named before "not enabled"
    assert raised.value.message == INVALID_URL
    with pytest.raises(InvalidParameter) as raised:
        check_destination("https://hooks.example.com/", Settings())
    assert raised.value.message == "Invalid parameter 'callback_url': webhooks are not enabled on this service."
    resolver = answers("10.1.1.1")
    monkeypatch.setattr(socket, "getaddrinfo", resolver)  # the default resolver, looked up at call time
    assert check_destination("https://hooks.example.com/cb", on).address == "10.1.1.1"
    assert resolver.calls == ["hooks.example.com"]


# -- delivery to the checked address -----------------------------------------------------------
class Receiver(ThreadingHTTPServer):
    """Records each request it gets and answers ``status`` (and ``location``, for a redirect)."""

    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.server_names: list[str | None] = []
        self.status, self.location = 204, None
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
            self.socket = tls.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self.server_address[1]


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        self.send_response(self.server.status)
        if self.server.location:
            self.send_header("Location", self.server.location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args):
        pass


@pytest.fixture
def receiver():
    servers = []

    def start(tls: ssl.SSLContext | None = None) -> Receiver:
        server = Receiver(tls)
        server.thread.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class RebindingDNS:
    """Answers ``name`` with ``first`` once, then ``later``: a DNS-rebinding attacker's server.

    Installed as socket.getaddrinfo, so it also sees any lookup the HTTP client would make;
    every other host (the numeric addresses urllib3 connects to) goes to the real function.
    """

    def __init__(self, name: str, first: str, later: str):
        self.name, self.first, self.later = name, first, later
        self.calls = 0
        self.real = socket.getaddrinfo

    def __call__(self, host, port, family=0, type=0, proto=0, flags=0):
        if host != self.name:
            return self.real(host, port, family, type, proto, flags)
        self.calls += 1
        address = self.first if self.calls == 1 else self.later
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]


LOOPBACK = parse_allowlist("127.0.0.0/8")


def test_a_rebinding_name_is_resolved_once_and_the_post_goes_to_the_checked_address(receiver, monkeypatch):
    server = receiver()
    # A later answer of 127.0.0.2 is loopback too (allowed by the test's allowlist) but nobody listens
    # there: a second resolution, by the check or by the HTTP client, would show as a count of 2 and
    # as a refused connection.
    dns = RebindingDNS(NAME, first="127.0.0.1", later="127.0.0.2")
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    dest = check(f"http://{NAME}:{server.port}/hooks/done?x=1", LOOPBACK)
    status = post(dest, b'{"ok":true}', {"Content-Type": "application/json", "X-Resizer-Token": "t1"}, timeout=5)
    assert status == 204
    assert dns.calls == 1
    [request] = server.requests
    assert request["headers"]["Host"] == f"{NAME}:{server.port}"
    assert (request["path"], request["body"]) == ("/hooks/done?x=1", b'{"ok":true}')
    assert request["headers"]["X-Resizer-Token"] == "t1"


def test_a_redirect_is_answered_not_followed(receiver):
    server = receiver()
    server.status, server.location = 302, f"http://127.0.0.1:{server.port}/elsewhere"
    dest = check(f"http://127.0.0.1:{server.port}/hook", LOOPBACK)
    assert post(dest, b"{}", {}, timeout=5) == 302
    assert [r["path"] for r in server.requests] == ["/hook"]


def test_credentials_in_the_url_become_basic_auth(receiver):
    server = receiver()
    dest = check(f"http://us%40er:p%3Ass@127.0.0.1:{server.port}/hook", LOOPBACK)
    assert "p:ss" not in repr(dest)
    post(dest, b"{}", {}, timeout=5)
    assert server.requests[0]["headers"]["Authorization"] == "Basic " + base64.b64encode(b"us@er:p:ss").decode()


def test_when_the_first_address_refuses_the_first_of_the_other_family_is_tried(receiver):
    server = receiver()  # listens on 127.0.0.1 only, so [::1] refuses (or has no IPv6 at all)
    dest = check(f"http://{NAME}:{server.port}/hook", parse_allowlist("127.0.0.0/8,::1"),
                 answers("::1", "::1", "127.0.0.1"))
    assert post(dest, b"{}", {}, timeout=5) == 204
    assert server.requests[0]["headers"]["Host"] == f"{NAME}:{server.port}"


def test_no_answer_is_a_delivery_error(receiver):
    server = receiver()
    port = server.port
    server.shutdown()
    server.server_close()
    dest = check(f"http://127.0.0.1:{port}/hook", LOOPBACK)
    with pytest.raises(DeliveryError, match=f"127.0.0.1:{port}"):
        post(dest, b"{}", {}, timeout=5)


# -- https: the name, not the address, is the TLS server name and what the certificate must match --
def _certificates(tmp_path, *, dns: list[str], ips: list[str]) -> tuple[str, ssl.SSLContext]:
    """A throw-away CA (its PEM file for the client) and a server context with a leaf it signed."""
    now = datetime.datetime.now(datetime.timezone.utc)
    validity = dict(not_valid_before=now - datetime.timedelta(minutes=5),
                    not_valid_after=now + datetime.timedelta(hours=1))
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "resizer test CA")])
    ca = (x509.CertificateBuilder(subject_name=ca_name, issuer_name=ca_name, public_key=ca_key.public_key(),
                                  serial_number=x509.random_serial_number(), **validity)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    names = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    leaf = (x509.CertificateBuilder(subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "receiver")]),
                                    issuer_name=ca_name, public_key=key.public_key(),
                                    serial_number=x509.random_serial_number(), **validity)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, chain_file, key_file = tmp_path / "ca.pem", tmp_path / "leaf.pem", tmp_path / "leaf.key"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain_file, key_file)
    return str(ca_file), context


def test_https_sends_the_name_as_sni_and_verifies_the_certificate_against_it(receiver, tmp_path, monkeypatch):
    ca_file, context = _certificates(tmp_path, dns=[NAME], ips=[])  # valid for the name, not for 127.0.0.1
    server = receiver(context)
    dns = RebindingDNS(NAME, first="127.0.0.1", later="127.0.0.2")
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    dest = check(f"https://{NAME}:{server.port}/hook", LOOPBACK)
    assert post(dest, b"{}", {}, timeout=5, ca_certs=ca_file) == 204
    assert server.server_names == [NAME]
    assert server.requests[0]["headers"]["Host"] == f"{NAME}:{server.port}"
    assert dns.calls == 1


@pytest.mark.parametrize("dns, ips", [(["other.example.test"], []), ([], ["127.0.0.1"])],
                         ids=["cert-for-another-name", "cert-for-the-address-only"])
def test_https_refuses_a_certificate_that_does_not_name_the_host(receiver, tmp_path, dns, ips):
    ca_file, context = _certificates(tmp_path, dns=dns, ips=ips)
    server = receiver(context)
    dest = check(f"https://{NAME}:{server.port}/hook", LOOPBACK, answers("127.0.0.1"))
    with pytest.raises(DeliveryError, match="(?i)hostname|match"):
        post(dest, b"{}", {}, timeout=5, ca_certs=ca_file)
    assert server.requests == []


def test_https_refuses_a_certificate_from_an_unknown_authority(receiver, tmp_path):
    (tmp_path / "server").mkdir()
    (tmp_path / "other").mkdir()
    _, context = _certificates(tmp_path / "server", dns=[NAME], ips=[])
    other_ca, _ = _certificates(tmp_path / "other", dns=[NAME], ips=[])
    server = receiver(context)
    dest = check(f"https://{NAME}:{server.port}/hook", LOOPBACK, answers("127.0.0.1"))
    with pytest.raises(DeliveryError, match="(?i)certificate verify failed"):
        post(dest, b"{}", {}, timeout=5, ca_certs=other_ca)
    assert server.requests == []
