"""The one URL fetcher: every way a URL could reach inside the network is refused (issue 5).

Tests run without network: a local server plays the shop's web server, and `shop.example` is made to
look like a public host on the internet whose packets are routed to that local server.
"""

import contextlib
import http.server
import io
import ipaddress
import shutil
import socket
import ssl
import subprocess
import threading
from urllib.parse import unquote

import pytest
from PIL import Image

from catalog.fetching import FetchRefused, _embedded_ipv4, fetch_image

PUBLIC_ADDRESS = "93.184.215.14"  # stands in for a shop's web server; never contacted
NAT64_OF_PUBLIC_ADDRESS = "64:ff9b::5db8:d70e"


def small_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


PHOTO = small_jpeg()


class ShopServer(http.server.ThreadingHTTPServer):
    """A local web server that records every connection it accepts."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ShopHandler)
        self.connections = []
        self.paths = []
        self.released = threading.Event()  # lets slow answers stop waiting when the test ends
        self.trickle_done = threading.Event()
        self.trickle_ended = None

    def verify_request(self, request, client_address):
        self.connections.append(client_address)
        return True


class ShopHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.server.paths.append(self.path)
        route, _, argument = self.path.lstrip("/").partition("/")
        getattr(self, f"answer_{route.replace('-', '_')}", self.answer_page)(argument)

    def answer_photo(self, _):
        self.send(200, PHOTO, {"Content-Type": "image/jpeg"})

    def answer_page(self, _):
        self.send(200, b"<html><body>not a photo</body></html>", {"Content-Type": "text/html; charset=utf-8"})

    def answer_hops(self, count):
        """A chain of `count` redirects that ends at the photo."""
        following = f"/hops/{int(count) - 1}" if int(count) > 1 else "/photo"
        self.send(302, b"", {"Location": following})

    def answer_to(self, location):
        self.send(302, b"", {"Location": unquote(location)})

    def answer_slow(self, _):
        self.server.released.wait(10)
        self.send(200, PHOTO, {"Content-Type": "image/jpeg"})

    def answer_trickled_headers(self, _):
        """A valid answer whose headers come a line at a time, each well within the timeout."""
        try:
            self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: image/jpeg\r\n")
            for _ in range(50):
                if self.server.released.wait(0.1):
                    return
                self.wfile.write(b"X-Wait: 1\r\n")
            self.wfile.write(b"Content-Length: %d\r\n\r\n" % len(PHOTO) + PHOTO)
            self.server.trickle_ended = "sent it all"
        except OSError:
            self.server.trickle_ended = "the fetcher hung up"
        finally:
            self.server.trickle_done.set()

    def answer_trickled_photo(self, _):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        for offset in range(0, len(PHOTO), 20):
            if self.server.released.wait(0.1):
                return
            self.wfile.write(PHOTO[offset : offset + 20])

    def answer_endless(self, _):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.end_headers()
        try:
            while not self.server.released.is_set():
                self.wfile.write(b"\xff" * 65536)
        except OSError:
            pass  # the fetcher hung up, as it should

    def answer_declared_huge(self, _):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(10**12))
        self.end_headers()

    def answer_missing(self, _):
        self.send(404, b"gone", {"Content-Type": "text/plain"})

    def send(self, status, body, headers):
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def running(server: ShopServer):
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    try:
        yield server
    finally:
        server.released.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def server():
    with running(ShopServer()) as server:
        yield server


NAMES = {
    "shop.example": [PUBLIC_ADDRESS],
    "www.shop.example": [PUBLIC_ADDRESS],
    "split.example": [PUBLIC_ADDRESS, "127.0.0.1"],
    "nat64.example": [NAT64_OF_PUBLIC_ADDRESS],
}


@pytest.fixture
def internet(monkeypatch) -> list[str]:
    """A pretend internet: a few public host names whose addresses are routed to the local server.

    Returns the list of addresses the fetcher dials."""
    real_getaddrinfo, real_create_connection = socket.getaddrinfo, socket.create_connection
    dialled = []

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in NAMES:
            return real_getaddrinfo(host, port, *args, **kwargs)
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, port, 0, 0))
            if ":" in address
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
            for address in NAMES[host]
        ]

    def create_connection(address, *args, **kwargs):
        dialled.append(address[0])
        if address[0] in (PUBLIC_ADDRESS, NAT64_OF_PUBLIC_ADDRESS):
            address = ("127.0.0.1", address[1])
        return real_create_connection(address, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    return dialled


@pytest.fixture
def shop(server, internet) -> str:
    return f"http://shop.example:{server.server_port}"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    """A self-signed certificate for shop.example, and its key."""
    if not shutil.which("openssl"):
        pytest.skip("making a test certificate needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    certificate, key = str(folder / "shop.pem"), str(folder / "shop.key")
    command = "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1"
    command += " -subj /CN=shop.example -addext subjectAltName=DNS:shop.example"
    subprocess.run([*command.split(), "-keyout", key, "-out", certificate], check=True, capture_output=True)
    return certificate, key


@pytest.fixture
def secure_server(certificate, internet, monkeypatch):
    """The local server behind TLS, with its certificate trusted the way a real shop's would be."""
    monkeypatch.setenv("SSL_CERT_FILE", certificate[0])
    server = ShopServer()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    with running(server):
        yield server


# What reaches the network


def test_a_photo_on_a_public_host_is_fetched(shop, server):
    fetched = fetch_image(f"{shop}/photo")

    assert fetched.content == PHOTO and fetched.content_type == "image/jpeg"
    assert server.paths == ["/photo"]


def test_the_fetcher_connects_to_the_very_address_it_checked(shop, internet):
    fetch_image(f"{shop}/hops/2")

    assert internet == [PUBLIC_ADDRESS] * 3


def test_a_nat64_address_is_dialled_as_it_is_so_ipv6_only_servers_reach_ipv4_shops(server, internet):
    fetched = fetch_image(f"http://nat64.example:{server.server_port}/photo")

    assert fetched.content == PHOTO
    assert internet == [NAT64_OF_PUBLIC_ADDRESS]


LOCAL_SPELLINGS = [
    "127.0.0.1",
    "127.1",  # short form
    "2130706433",  # decimal
    "0177.0.0.1",  # octal
    "0x7f.0.0.1",  # hex
    "0x7f.1",
    "0",
    "0.0.0.0",  # noqa: S104 (a host to fetch from, not to listen on)
    "localhost",
    "LOCALHOST",
    "ⓛocalhost",  # IDNA maps it to localhost
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",  # IPv4-compatible
    "[64:ff9b::7f00:1]",  # NAT64
    "[::1]",
    "[::]",
]


@pytest.mark.parametrize("host", LOCAL_SPELLINGS)
def test_the_local_machine_in_any_spelling_is_refused_before_any_connection(host, server):
    with pytest.raises(FetchRefused, match=r"private or local addresses are not allowed"):
        fetch_image(f"http://{host}:{server.server_port}/photo")

    assert server.connections == []


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1", "2130706433", "0177.0.0.1", "0x7f.0.0.1", "localhost"])
def test_those_spellings_really_reach_the_local_server_when_private_fetching_is_allowed(host, server, settings):
    # Proves that the refusals above guard a real door, not a URL that would have failed anyway.
    settings.MEEPO_FETCH_ALLOW_PRIVATE = True

    assert fetch_image(f"http://{host}:{server.server_port}/photo").content == PHOTO
    assert len(server.connections) == 1


@pytest.mark.parametrize(
    "host",
    [
        "10.0.0.1",
        "10.255.255.255",
        "172.16.0.1",
        "172.31.255.254",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "192.0.0.1",
        "198.18.0.1",  # benchmarking
        "224.0.0.1",  # multicast
        "239.255.255.250",
        "240.0.0.1",  # reserved
        "255.255.255.255",  # broadcast
        "[fc00::1]",  # unique local
        "[fd12:3456::1]",
        "[fe80::1]",  # link local
        "[fec0::1]",  # site local (deprecated, still routed by some networks)
        "[ff02::1]",  # multicast
        "[::ffff:10.0.0.1]",
        "[::ffff:169.254.169.254]",
        "[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
        "[2002:a00:1::]",  # 6to4 of 10.0.0.1
        "[2001:0:4136:e378:8000:63bf:f5ff:fffe]",  # Teredo of 10.0.0.1
        "[100::1]",  # discard-only
        "[2001:db8::1]",  # documentation
    ],
)
def test_private_link_local_multicast_and_reserved_addresses_are_refused(host):
    with pytest.raises(FetchRefused, match=r"private or local addresses are not allowed"):
        fetch_image(f"http://{host}/photo.jpg")


@pytest.mark.parametrize(
    ("address", "carried"),
    [
        ("::ffff:10.0.0.5", "10.0.0.5"),
        ("64:ff9b::a00:5", "10.0.0.5"),
        ("2002:a00:1::", "10.0.0.1"),
        ("::127.0.0.1", "127.0.0.1"),
        ("2001:4860:4860::8888", "2001:4860:4860::8888"),
    ],
)
def test_ipv6_addresses_are_checked_by_the_ipv4_address_they_carry(address, carried):
    assert _embedded_ipv4(ipaddress.ip_address(address)) == ipaddress.ip_address(carried)


def test_a_host_with_one_private_address_among_public_ones_is_refused(server, internet):
    with pytest.raises(FetchRefused, match=r"private or local addresses are not allowed \(split\.example\)"):
        fetch_image(f"http://split.example:{server.server_port}/photo")

    assert internet == [] and server.connections == []


def test_a_host_that_does_not_resolve_is_refused_clearly():
    with pytest.raises(FetchRefused, match=r"The host 'no-such-host\.invalid' could not be found"):
        fetch_image("http://no-such-host.invalid/photo.jpg")


# What the URL may look like


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "Only http:// and https:// URLs"),
        ("ftp://shop.example/photo.jpg", "Only http:// and https:// URLs"),
        ("gopher://shop.example:70/_GET", "Only http:// and https:// URLs"),
        ("data:image/png;base64,iVBORw0KGgo=", "Only http:// and https:// URLs"),
        ("javascript:alert(1)", "Only http:// and https:// URLs"),
        ("//shop.example/photo.jpg", "Only http:// and https:// URLs"),
        ("shop.example/photo.jpg", "Only http:// and https:// URLs"),
        ("http:///photo.jpg", "The URL has no host."),
        ("http://user:secret@shop.example/photo.jpg", "user name or password"),
        ("http://user@shop.example/photo.jpg", "user name or password"),
        ("http://shop.example@127.0.0.1/photo.jpg", "user name or password"),
        ("http://shop.example:99999/photo.jpg", "The URL is not valid."),
        ("http://shop.example:port/photo.jpg", "The URL is not valid."),
        ("http://[::1/photo.jpg", "The URL is not valid."),
        ("http://shop.example/" + "a" * 2000, "The URL is too long."),
        ("http://" + "a" * 64 + ".example/photo.jpg", "could not be found"),
        ("http://[fe80::1%25eth0]/photo.jpg", "could not be found"),
        ("http://127.0.0.1\x00.shop.example/photo.jpg", "private or local addresses"),
    ],
)
def test_urls_that_are_not_plain_http_to_a_host_are_refused_with_a_clear_message(url, message, server):
    with pytest.raises(FetchRefused, match=message.replace(".", r"\.").replace("(", r"\(")):
        fetch_image(url)

    assert server.connections == []


def test_uppercase_scheme_and_host_are_fetched_like_lowercase(shop, server):
    assert fetch_image(shop.replace("http://shop.example", "HTTP://SHOP.EXAMPLE") + "/photo").content == PHOTO


# Redirects


def test_three_redirects_are_followed(shop, server):
    fetched = fetch_image(f"{shop}/hops/3")

    assert fetched.content == PHOTO and fetched.url.endswith("/photo")
    assert server.paths == ["/hops/3", "/hops/2", "/hops/1", "/photo"]


def test_a_fourth_redirect_is_refused(shop, server):
    with pytest.raises(FetchRefused, match="redirected more than 3 times"):
        fetch_image(f"{shop}/hops/4")

    assert server.paths == ["/hops/4", "/hops/3", "/hops/2", "/hops/1"]


@pytest.mark.parametrize(
    ("location", "message"),
    [
        ("http://127.0.0.1:{port}/photo", "private or local addresses"),
        ("http://localhost:{port}/photo", "private or local addresses"),
        ("http://2130706433:{port}/photo", "private or local addresses"),
        ("http://[::ffff:127.0.0.1]:{port}/photo", "private or local addresses"),
        ("http://169.254.169.254/latest/meta-data/", "private or local addresses"),
        ("http://10.0.0.1/admin", "private or local addresses"),
        ("//127.0.0.1:{port}/photo", "private or local addresses"),
        ("file:///etc/passwd", "Only http:// and https:// URLs"),
        ("gopher://127.0.0.1:6379/_FLUSHALL", "Only http:// and https:// URLs"),
        ("http://user:secret@shop.example/photo", "user name or password"),
    ],
)
def test_a_redirect_to_a_local_address_or_another_scheme_is_refused(shop, server, location, message):
    with pytest.raises(FetchRefused, match=message):
        fetch_image(f"{shop}/to/{location.format(port=server.server_port)}")

    assert len(server.paths) == 1 and len(server.connections) == 1


def test_a_redirect_chain_that_ends_on_a_local_address_is_refused(shop, server):
    local = f"http://127.0.0.1:{server.server_port}/photo"
    with pytest.raises(FetchRefused, match="private or local addresses"):
        fetch_image(f"{shop}/to/{shop}/to/{local}")

    assert len(server.connections) == 2


# What comes back


def test_a_web_page_is_refused(shop):
    with pytest.raises(FetchRefused, match=r"The URL gives text/html, not an image\."):
        fetch_image(f"{shop}/page")


def test_an_error_status_is_refused_with_the_status(shop):
    with pytest.raises(FetchRefused, match=r"The server answered 404 Not Found\."):
        fetch_image(f"{shop}/missing")


def test_a_server_that_never_answers_is_given_up_on(shop, settings):
    settings.MEEPO_FETCH_TIMEOUT = 0.5

    with pytest.raises(FetchRefused, match="took too long"):
        fetch_image(f"{shop}/slow")


def test_a_server_that_trickles_its_headers_cannot_hold_the_fetcher_past_the_timeout(shop, server, settings):
    # Each header line arrives well within the timeout; only a deadline for the whole answer stops
    # this. The server would take 5 s to send it all; the fetcher must hang up after 1.
    settings.MEEPO_FETCH_TIMEOUT = 1

    with pytest.raises(FetchRefused, match="took too long"):
        fetch_image(f"{shop}/trickled-headers")

    assert server.trickle_done.wait(10)
    assert server.trickle_ended == "the fetcher hung up"


def test_a_server_that_trickles_the_photo_cannot_hold_the_fetcher_past_the_timeout(shop, settings):
    settings.MEEPO_FETCH_TIMEOUT = 1

    with pytest.raises(FetchRefused, match="took too long"):
        fetch_image(f"{shop}/trickled-photo")


def test_an_endless_answer_is_cut_off_at_the_byte_cap(shop, settings):
    settings.MEEPO_FETCH_MAX_BYTES = 256 * 1024

    with pytest.raises(FetchRefused, match=r"The image is larger than 256\.0\sKB\."):
        fetch_image(f"{shop}/endless")


def test_an_answer_declaring_too_many_bytes_is_refused_before_reading_it(shop):
    with pytest.raises(FetchRefused, match=r"The image is larger than 15\.0\sMB\."):
        fetch_image(f"{shop}/declared-huge")


def test_the_caller_can_set_a_smaller_byte_cap(shop):
    with pytest.raises(FetchRefused, match="larger than"):
        fetch_image(f"{shop}/photo", max_bytes=len(PHOTO) - 1)

    assert fetch_image(f"{shop}/photo", max_bytes=len(PHOTO)).content == PHOTO


# HTTPS


def test_a_photo_over_https_is_fetched_with_the_certificate_checked_against_the_host_name(secure_server, internet):
    fetched = fetch_image(f"https://shop.example:{secure_server.server_port}/photo")

    assert fetched.content == PHOTO
    assert internet == [PUBLIC_ADDRESS]


def test_an_https_host_with_someone_elses_certificate_is_refused(secure_server):
    with pytest.raises(FetchRefused, match=r"could not be downloaded \(SSLCertVerificationError\)"):
        fetch_image(f"https://www.shop.example:{secure_server.server_port}/photo")

    assert secure_server.paths == []


def test_an_https_server_that_trickles_its_headers_cannot_hold_the_fetcher_past_the_timeout(secure_server, settings):
    settings.MEEPO_FETCH_TIMEOUT = 1

    with pytest.raises(FetchRefused, match="took too long"):
        fetch_image(f"https://shop.example:{secure_server.server_port}/trickled-headers")

    assert secure_server.trickle_done.wait(10)
    assert secure_server.trickle_ended == "the fetcher hung up"


def test_an_https_server_that_never_starts_the_handshake_is_given_up_on(internet, settings):
    settings.MEEPO_FETCH_TIMEOUT = 0.5
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never says a word
    with silent, pytest.raises(FetchRefused, match="took too long"):
        fetch_image(f"https://shop.example:{silent.getsockname()[1]}/photo")
