"""Webhook URLs and deliveries (durable_sessions/streams/subscriptions/webhooks.py, targets.py).

Deliveries go to real servers on loopback started by the tests (``Receiver``), over plain
sockets, so that what arrives is the exact bytes sent; https ones use certificates made here, for
a host name that the injected resolver maps to 127.0.0.1.
"""

from __future__ import annotations

import datetime
import gzip
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from django.test import override_settings

from durable_sessions.streams.subscriptions import webhooks
from durable_sessions.streams.subscriptions.errors import WebhookUrlRejected
from durable_sessions.streams.subscriptions.webhooks import (
    MAX_RESPONSE_BYTES,
    ConnectFailed,
    DeliveryRefused,
    DeliveryTimeout,
)

PUBLIC = "93.184.215.14"
NAMES = {
    "hooks.example.com": [PUBLIC],
    "v6.example.com": ["2606:4700:4700::1111"],
    "private.example.com": ["10.1.2.3"],
    "mixed.example.com": [PUBLIC, "192.168.1.1"],
    "meta.example.com": ["169.254.169.254"],
    "mapped.example.com": ["::ffff:10.0.0.1"],
    "loop.example.com": ["127.0.0.1"],
    "loop-and-public.example.com": ["127.0.0.1", PUBLIC],
    "localhost": ["127.0.0.1", "::1"],
    "empty.example.com": [],
    "garbage.example.com": ["not-an-address"],
}


def resolver(names: dict[str, list[str]] = NAMES) -> Callable[[str, int], list[str]]:
    """A resolver answering from ``names`` (what a DNS server would answer), and reading
    numeric hosts as the system's getaddrinfo does (inet_aton: ``2130706433`` is 127.0.0.1)."""

    def resolve(host: str, port: int) -> list[str]:
        if host.rstrip(".") in names:
            return names[host.rstrip(".")]
        try:
            return [socket.inet_ntoa(socket.inet_aton(host))]
        except OSError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None

    return resolve


ACCEPTED = [
    "https://hooks.example.com/webhook",
    "https://hooks.example.com:8443/x?y=1#fragment",
    "https://HOOKS.Example.COM/",
    "https://hooks.example.com./",
    "https://8.8.8.8/hook",
    "https://8.8.8.8:1/hook",
    "https://[2606:4700:4700::1111]/hook",
    "https://[::ffff:8.8.8.8]/",  # IPv4-mapped: judged by the IPv4 address
    "https://[64:ff9b::808:808]/",  # NAT64 of a public address
    "https://v6.example.com/",
]
REJECTED = [
    # http, and the addresses the protocol names
    "http://10.0.0.1/hook",  # the conformance suite's case
    "http://hooks.example.com/",  # http to a public host
    "http://8.8.8.8/",
    "https://10.0.0.1/",
    "https://172.16.0.1/",
    "https://172.31.255.255/",
    "https://192.168.1.1/",
    "https://169.254.169.254/latest/meta-data/",
    "https://100.64.0.1/",
    "https://0.0.0.0/",
    "https://127.0.0.1/",
    "https://127.9.9.9/",
    "https://[::1]/",
    "https://[::]/",
    "https://[fe80::1]/",
    "https://[fc00::1]/",
    "https://[fd12:3456::1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:169.254.169.254]/",
    "https://[::ffff:a00:1]/",  # ::ffff:10.0.0.1 written in hex
    "https://[::10.0.0.1]/",  # IPv4-compatible (deprecated)
    "https://[64:ff9b::a00:1]/",  # NAT64 of a private address
    "https://[64:ff9b::7f00:1]/",  # NAT64 of loopback
    "https://[2002:a00:1::]/",  # 6to4
    "https://[2001::1]/",  # Teredo
    "https://[2001:db8::1]/",
    "https://224.0.0.1/",
    "https://[ff02::1]/",
    "https://255.255.255.255/",
    "https://240.0.0.1/",
    "https://192.0.2.1/",
    "https://198.18.0.1/",
    # numbers that are not dotted quads: resolvers read 2130706433 and 0x7f.1 as 127.0.0.1
    "http://2130706433/",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://0x8080808/",  # 8.8.8.8, public, but not written as a dotted quad
    "https://0x7f.1/",
    "https://0177.0.0.1/",
    "https://127.1/",
    "https://1.2.3/",
    "https://08.8.8.8/",
    "https://8.8.8.8./",
    "https://1.2.3.4.5/",
    "https://hooks.123/",
    "https://hooks.0x1/",
    # names that resolve where webhooks may not go, or nowhere
    "https://private.example.com/",
    "https://mixed.example.com/",  # one bad address is enough
    "https://meta.example.com/",
    "https://mapped.example.com/",
    "https://loop.example.com/",
    "https://empty.example.com/",
    "https://garbage.example.com/",
    "https://nxdomain.example.com/",
    "https://localhost/",
    "https://api.localhost/",
    # malformed or ambiguous
    "ftp://hooks.example.com/",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "gopher://hooks.example.com/",
    "hooks.example.com/webhook",
    "//hooks.example.com/webhook",
    "https://user:pass@hooks.example.com/",
    "https://user@hooks.example.com/",
    "https://hooks.example.com@10.0.0.1/",
    "https://hooks.example.com\\@10.0.0.1/",
    "https:///webhook",
    "https://",
    "https://:443/",
    "",
    "https://hooks.example.com:0/",
    "https://hooks.example.com:65536/",
    "https://hooks.example.com:x/",
    "https://[::1/",
    "https://[fe80::1%25eth0]/",
    "https://[hooks.example.com]/",
    "https://hooks .example.com/",
    "https://hooks.example.com/\n",
    "https://hooks.exa\tmple.com/",
    "https://hooks.example.com/\x00",
    "https://bücher.example/",
    "https://a..example.com/",
    "https://-a.example.com/",
    "https://hooks.example.com%2f.evil/",
    "https://hooks.example.com/" + "a" * 3000,
    None,
    42,
]
LOOPBACK_ACCEPTED = [
    "http://127.0.0.1:8080/webhook",
    "http://127.0.0.5/",
    "https://127.0.0.1/",
    "http://[::1]:9/",
    "http://[::ffff:127.0.0.1]/",
    "http://localhost:3000/",
    "http://LOCALHOST/",
    "http://loop.example.com/",
    "https://hooks.example.com/",
]
LOOPBACK_REJECTED = [
    "http://10.0.0.1/hook",
    "http://hooks.example.com/",
    "http://loop-and-public.example.com/",  # http to what is not only loopback
    "http://2130706433/",
    "http://127.1/",
    "https://169.254.169.254/",
    "http://[64:ff9b::7f00:1]/",  # a NAT64 gateway does not reach our loopback
    "http://0.0.0.0:8000/",  # reaches this machine on Linux, but is not loopback
    "ftp://127.0.0.1/",
]


@pytest.mark.parametrize("url", ACCEPTED)
def test_accepted(url):
    webhooks.validate_url(url, resolver=resolver(), allow_loopback=False)
    webhooks.validate_url(url, resolver=resolver(), allow_loopback=True)


@pytest.mark.parametrize("url", REJECTED, ids=repr)
def test_rejected(url):
    with pytest.raises(WebhookUrlRejected) as caught:
        webhooks.validate_url(url, resolver=resolver(), allow_loopback=False)
    assert caught.value.status == 400
    assert caught.value.code == "WEBHOOK_URL_REJECTED"


@pytest.mark.parametrize("url", LOOPBACK_ACCEPTED)
def test_loopback_accepted_when_allowed(url):
    webhooks.validate_url(url, resolver=resolver(), allow_loopback=True)


@pytest.mark.parametrize("url", LOOPBACK_REJECTED)
def test_loopback_allowed_still_rejects(url):
    with pytest.raises(WebhookUrlRejected):
        webhooks.validate_url(url, resolver=resolver(), allow_loopback=True)


def test_messages_say_why():
    cases = {
        "http://10.0.0.1/hook": "private address",
        "https://169.254.169.254/": "cloud metadata",
        "https://private.example.com/": "private.example.com resolves to 10.1.2.3",
        "https://2130706433/": "dotted quad",
        "http://hooks.example.com/": "https",
        "https://u@hooks.example.com/": "user info",
        "https://nxdomain.example.com/": "did not resolve",
    }
    for url, words in cases.items():
        with pytest.raises(WebhookUrlRejected) as caught:
            webhooks.validate_url(url, resolver=resolver(), allow_loopback=False)
        assert words in caught.value.message, (url, caught.value.message)


def test_the_setting_allows_loopback():
    with pytest.raises(WebhookUrlRejected):
        webhooks.validate_url("http://127.0.0.1:9/webhook")
    with override_settings(DURABLE_SESSIONS={"WEBHOOK_ALLOW_LOOPBACK": True}):
        webhooks.validate_url("http://127.0.0.1:9/webhook")


def test_the_system_resolver():
    webhooks.validate_url("http://localhost:9/", allow_loopback=True)
    with pytest.raises(WebhookUrlRejected):
        webhooks.validate_url("https://localhost/", allow_loopback=False)


def test_a_resolver_that_hangs_is_given_up():
    release = threading.Event()

    def hanging(host: str, port: int) -> list[str]:
        release.wait(30)
        return [PUBLIC]

    try:
        with override_settings(DURABLE_SESSIONS={"WEBHOOK_TIMEOUT": 0.2}):
            started = time.monotonic()
            with pytest.raises(WebhookUrlRejected, match="took more than"):
                webhooks.validate_url("https://hooks.example.com/", resolver=hanging)
        assert time.monotonic() - started < 5
        started = time.monotonic()
        with pytest.raises(DeliveryTimeout, match="took more than"):
            webhooks.post("https://hooks.example.com/", b"{}", {}, timeout=0.2, resolver=hanging)
        assert time.monotonic() - started < 5
    finally:
        release.set()


# --- deliveries ------------------------------------------------------------------------------

JSON_DONE = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 13\r\n\r\n{"done":true}'
)


class Receiver:
    """A real HTTP (or HTTPS) server on loopback that records the raw bytes of each request
    and answers each with ``answer`` (bytes, or a function given the socket)."""

    def __init__(
        self,
        answer: bytes | Callable[[socket.socket], None] = JSON_DONE,
        *,
        tls: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ):
        self.answer = answer
        self.tls = tls
        self.requests: list[bytes] = []
        self.connections = 0
        self.server_names: list[str | None] = []
        self.tls_errors: list[str] = []
        self.sent = 0
        self.stopping = threading.Event()
        if tls is not None:
            tls.sni_callback = lambda sock, name, context: self.server_names.append(name)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.create_server((host, 0), family=family)
        self.sock.settimeout(0.05)  # the accept loop looks at ``stopping`` this often
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.sock.close()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.settimeout(10)
            try:
                self._handle(conn)
            except (OSError, ssl.SSLError) as exc:
                self.tls_errors.append(repr(exc))
            finally:
                conn.close()

    def _handle(self, conn: socket.socket) -> None:
        if self.tls is not None:
            conn = self.tls.wrap_socket(conn, server_side=True)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return
            data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").lower()
        length = next(
            (
                int(line.split(":", 1)[1])
                for line in head.split("\r\n")
                if line.startswith("content-length:")
            ),
            0,
        )
        while len(data.split(b"\r\n\r\n", 1)[1]) < length:
            data += conn.recv(65536)
        self.requests.append(data)
        if callable(self.answer):
            self.answer(conn)
        else:
            conn.sendall(self.answer)

    def url(self, path: str = "/webhook", host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"


def parse(raw: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    """The request line, the headers in order, and the body of a raw request."""
    head, body = raw.split(b"\r\n\r\n", 1)
    line, *fields = head.decode("latin-1").split("\r\n")
    return line, [tuple(part.strip() for part in f.split(":", 1)) for f in fields], body


def post(url: str, body: bytes = b"{}", headers: dict | None = None, **options):
    options.setdefault("timeout", 5.0)
    options.setdefault("allow_loopback", True)
    return webhooks.post(url, body, headers or {}, **options)


def test_the_request_is_the_body_and_headers_given():
    body = json.dumps({"subscription_id": "sub-1", "note": "é"}).encode() + b"\n"
    headers = {
        "Content-Type": "application/json",
        "Webhook-Signature": "t=1,kid=ds_x,ed25519=abc",
        "Host": "evil.example",  # ours to set
        "Content-Length": "1",
    }
    with Receiver() as receiver:
        delivered = post(receiver.url("/webhook?x=1&y=%2F"), body, headers)
    assert delivered.status == 200 and delivered.ok
    assert delivered.data == {"done": True}
    assert not delivered.truncated and 0 < delivered.elapsed < 5
    [raw] = receiver.requests
    line, fields, received = parse(raw)
    assert line == "POST /webhook?x=1&y=%2F HTTP/1.1"
    assert received == body
    names = [name.lower() for name, _ in fields]
    assert len(names) == len(set(names)), fields
    got = {name.lower(): value for name, value in fields}
    assert got["host"] == f"127.0.0.1:{receiver.port}"
    assert got["content-length"] == str(len(body))
    assert got["content-type"] == "application/json"
    assert got["webhook-signature"] == "t=1,kid=ds_x,ed25519=abc"
    assert got["accept-encoding"] == "identity"
    assert got["user-agent"] == "durable-sessions-webhook"
    assert "transfer-encoding" not in got


def test_a_name_is_sent_as_the_host():
    with Receiver() as receiver:
        delivered = post(receiver.url(host="localhost"))  # the system resolver
    assert delivered.data == {"done": True}
    got = dict(parse(receiver.requests[0])[1])
    assert got["Host"] == f"localhost:{receiver.port}"


def test_an_ipv6_address():
    with Receiver(host="::1") as receiver:
        delivered = post(receiver.url(host="[::1]"))
    assert delivered.data == {"done": True}
    assert dict(parse(receiver.requests[0])[1])["Host"] == f"[::1]:{receiver.port}"


def test_every_address_is_tried_in_turn():
    names = {"hooks.test": ["127.0.0.2", "127.0.0.1"]}  # nothing listens on 127.0.0.2
    with Receiver() as receiver:
        delivered = post(receiver.url(host="hooks.test"), resolver=resolver(names))
    assert delivered.data == {"done": True}
    assert dict(parse(receiver.requests[0])[1])["Host"] == f"hooks.test:{receiver.port}"


def test_redirects_are_not_followed():
    with Receiver() as elsewhere:
        redirect = (
            f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {elsewhere.url()}\r\n"
            "Content-Length: 0\r\n\r\n"
        ).encode()
        with Receiver(redirect) as receiver:
            delivered = post(receiver.url())
    assert delivered.status == 307 and not delivered.ok
    assert delivered.data is None
    assert elsewhere.connections == 0


def test_answers_that_are_not_json():
    answers = {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nOK": None,
        b"HTTP/1.1 204 No Content\r\n\r\n": None,
        b'HTTP/1.1 500 Oops\r\nContent-Length: 13\r\n\r\n{"done":true}': {"done": True},
        b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n" + b"[" * 20000: None,  # too deep
    }
    zipped = gzip.compress(b'{"done":true}')
    answers[
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(zipped)
        + zipped
    ] = None
    for answer, data in answers.items():
        with Receiver(answer) as receiver:
            delivered = post(receiver.url())
        assert delivered.data == data, answer[:60]


def test_the_answer_is_read_up_to_the_limit():
    def document(size: int) -> bytes:
        start = b'{"done":true,"pad":"'
        return start + b"x" * (size - len(start) - 2) + b'"}'

    for size, truncated in [(MAX_RESPONSE_BYTES, False), (MAX_RESPONSE_BYTES + 1, True)]:
        body = document(size)
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        with Receiver(answer) as receiver:
            delivered = post(receiver.url())
        assert delivered.truncated is truncated
        assert (delivered.data is None) is truncated


def endless(conn: socket.socket, chunked: bool, receiver: Receiver) -> None:
    """An answer that never ends: it stops when the client hangs up."""
    head = "Transfer-Encoding: chunked" if chunked else "Content-Length: 1000000000"
    conn.sendall(f"HTTP/1.1 200 OK\r\n{head}\r\n\r\n".encode())
    block = b"x" * 65536
    frame = b"%x\r\n%s\r\n" % (len(block), block) if chunked else block
    try:
        while not receiver.stopping.is_set():
            conn.sendall(frame)
            receiver.sent += len(block)
    except OSError:
        receiver.hung_up.set()  # the client hung up, as it should


@pytest.mark.parametrize("chunked", [False, True])
def test_a_huge_answer_is_cut_off(chunked):
    receiver = Receiver()
    receiver.answer = lambda conn: endless(conn, chunked, receiver)
    receiver.hung_up = threading.Event()
    with receiver:
        delivered = post(receiver.url())
        assert delivered.status == 200 and delivered.truncated and delivered.data is None
        # post() hung up after the first 64 KB: the server's sends fail soon after.
        assert receiver.hung_up.wait(10)
    assert receiver.sent < 64 * 1024 * 1024


def test_a_name_that_now_resolves_to_loopback_is_refused_at_delivery():
    """DNS rebinding: public when the subscription was made, this machine when delivering."""
    answers = iter([[PUBLIC], ["127.0.0.1"]])
    rebinding = lambda host, port: next(answers)  # noqa: E731
    with Receiver() as receiver:
        url = f"https://rebind.example.com:{receiver.port}/webhook"
        webhooks.validate_url(url, resolver=rebinding, allow_loopback=False)
        with pytest.raises(DeliveryRefused, match=r"resolves to 127\.0\.0\.1, a loopback"):
            webhooks.post(url, b"{}", {}, timeout=5, resolver=rebinding, allow_loopback=False)
    assert receiver.connections == 0


def test_a_name_that_now_resolves_to_a_private_address_is_refused_at_delivery():
    answers = iter([[PUBLIC], [PUBLIC, "10.0.0.1"]])
    rebinding = lambda host, port: next(answers)  # noqa: E731
    url = "https://rebind.example.com/webhook"
    webhooks.validate_url(url, resolver=rebinding, allow_loopback=False)
    with pytest.raises(DeliveryRefused, match="private"):
        webhooks.post(url, b"{}", {}, timeout=5, resolver=rebinding, allow_loopback=False)


def test_delivery_checks_the_url_and_the_setting_again():
    with Receiver() as receiver:
        with pytest.raises(DeliveryRefused):
            webhooks.post(receiver.url(), b"{}", {}, timeout=5)  # loopback not allowed now
        with pytest.raises(DeliveryRefused):
            post(f"http://2130706433:{receiver.port}/")
    assert receiver.connections == 0


def test_a_refused_connection():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
    try:
        with pytest.raises(ConnectFailed, match="could not connect"):
            post(f"http://127.0.0.1:{closed.getsockname()[1]}/")
    finally:
        closed.close()
    with pytest.raises(ConnectFailed, match="did not resolve"):
        post("http://nowhere.test/", resolver=resolver())


def test_a_receiver_that_does_not_answer_times_out():
    receiver = Receiver()
    receiver.answer = lambda conn: receiver.stopping.wait(30)
    with receiver:
        started = time.monotonic()
        with pytest.raises(DeliveryTimeout):
            post(receiver.url(), timeout=0.5)
        assert time.monotonic() - started < 3


def test_a_receiver_that_answers_slowly_times_out():
    """Each byte comes in time, but the answer as a whole does not."""

    def drip(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):
            if receiver.stopping.wait(0.05):
                return
            conn.sendall(b" ")

    receiver = Receiver(drip)
    with receiver:
        started = time.monotonic()
        with pytest.raises(DeliveryTimeout):
            post(receiver.url(), timeout=0.5)
        assert time.monotonic() - started < 3


def test_proxies_in_the_environment_are_not_used(monkeypatch):
    with Receiver() as proxy, Receiver() as receiver:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy.url(path=""))
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        assert post(receiver.url()).data == {"done": True}
    assert proxy.connections == 0


# --- https -----------------------------------------------------------------------------------


class Authority:
    """A certificate authority made for the test, and certificates it signs."""

    def __init__(self, tmp_path):
        self.dir = tmp_path
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "durable-sessions test CA")])
        self.cert = (
            self._builder(name, name, self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = tmp_path / "ca.pem"
        self.pem.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject, issuer, public_key) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    def client_context(self) -> ssl.SSLContext:
        """What post() is given: a verifying context that trusts this authority only."""
        return ssl.create_default_context(cafile=str(self.pem))

    def server_context(self, *names: str, ips: tuple[str, ...] = ()) -> ssl.SSLContext:
        """A server context whose certificate is for ``names`` (and ``ips``)."""
        import ipaddress

        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
        alternatives = [x509.DNSName(name) for name in names]
        alternatives += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        cert = (
            self._builder(subject, self.cert.subject, key.public_key())
            .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        stem = self.dir / names[0]
        (stem.with_suffix(".crt")).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (stem.with_suffix(".key")).write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(stem.with_suffix(".crt"), stem.with_suffix(".key"))
        return context


HOOKS = {"hooks.test": ["127.0.0.1"]}


def test_https_connects_to_the_address_and_checks_the_name(tmp_path):
    """The certificate is for hooks.test only (not for 127.0.0.1): the handshake succeeds only
    if it is checked against the name, and the server sees the name in SNI."""
    authority = Authority(tmp_path)
    with Receiver(tls=authority.server_context("hooks.test")) as receiver:
        delivered = post(
            receiver.url(host="hooks.test", scheme="https"),
            b'{"a":1}',
            resolver=resolver(HOOKS),
            ssl_context=authority.client_context(),
        )
    assert delivered.data == {"done": True}
    assert receiver.server_names == ["hooks.test"]
    line, fields, body = parse(receiver.requests[0])
    assert dict(fields)["Host"] == f"hooks.test:{receiver.port}"
    assert (line, body) == ("POST /webhook HTTP/1.1", b'{"a":1}')


def test_https_refuses_a_certificate_for_another_name(tmp_path):
    """A certificate valid for the address we connect to, but not for the URL's host name."""
    authority = Authority(tmp_path)
    server = authority.server_context("other.test", ips=("127.0.0.1",))
    refused = pytest.raises(ConnectFailed, match=r"(?i)certificate|hostname")
    with Receiver(tls=server) as receiver, refused:
        post(
            receiver.url(host="hooks.test", scheme="https"),
            resolver=resolver(HOOKS),
            ssl_context=authority.client_context(),
        )
    assert receiver.requests == []


def test_https_verifies_against_known_authorities_by_default(tmp_path):
    authority = Authority(tmp_path)
    refused = pytest.raises(ConnectFailed, match=r"(?i)certificate")
    with Receiver(tls=authority.server_context("hooks.test")) as receiver, refused:
        post(receiver.url(host="hooks.test", scheme="https"), resolver=resolver(HOOKS))
    assert receiver.requests == []


# --- backoff ---------------------------------------------------------------------------------


def test_backoff_doubles_from_one_second_to_a_minute_with_jitter():
    for attempt, nominal in [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (8, 60), (10**9, 60)]:
        delays = [webhooks.backoff(attempt) for _ in range(500)]
        assert all(0.8 * nominal <= delay <= 1.2 * nominal for delay in delays), attempt
        assert max(delays) - min(delays) > 0.2 * nominal, attempt  # jittered, both ways
        assert abs(sum(delays) / len(delays) - nominal) < 0.05 * nominal
    for attempt in (0, -1):
        with pytest.raises(ValueError):
            webhooks.backoff(attempt)
