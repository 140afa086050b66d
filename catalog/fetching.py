"""The one URL fetcher: catalogue import and photo-URL search both come through here.

It refuses anything but http(s), resolves the host once and connects to that very address (so a
DNS answer cannot change between the check and the request), refuses non-public addresses,
re-checks every redirect, and caps time and bytes.
"""

import http.client
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlsplit

from django.conf import settings
from django.template.defaultfilters import filesizeformat

MAX_REDIRECTS = 3
IMAGE_CONTENT_TYPES = ("image/", "application/octet-stream", "binary/octet-stream")


class FetchRefused(ValueError):
    """The URL was not fetched or gave no image; the message is safe to show to a user."""


@dataclass
class FetchedImage:
    url: str
    content: bytes
    content_type: str


def resolve_public_address(host: str, port: int) -> str:
    """Return one public IP address for host, or refuse the URL."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise FetchRefused(f"The host {host!r} could not be found.") from None
    addresses = [ipaddress.ip_address(sockaddr[0].split("%")[0]) for *_, sockaddr in infos]
    if not settings.MEEPO_FETCH_ALLOW_PRIVATE:
        for address in addresses:
            if not _is_public(_embedded_ipv4(address)):
                raise FetchRefused(f"URLs that point to private or local addresses are not allowed ({host}).")
    # The address itself is dialled, not the IPv4 one it carries: on an IPv6-only network a NAT64
    # address is the only way to reach an IPv4 shop.
    return str(addresses[0])


def _is_public(address) -> bool:
    # ipaddress counts fec0::/10 as global, but it is the old site-local range that some networks still route inside.
    site_local = address.version == 6 and address.is_site_local
    return address.is_global and not address.is_multicast and not site_local


NAT64 = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded_ipv4(address):
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64, compatible), which is
    where a packet can end up: 64:ff9b::a00:5 reaches 10.0.0.5 on a NAT64 network."""
    if not isinstance(address, ipaddress.IPv6Address):
        return address
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if address.teredo:
        return address.teredo[1]
    if address in NAT64 or address in IPV4_COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _split(url: str) -> tuple[str, str, int, str]:
    if len(url) > 2000:
        raise FetchRefused("The URL is too long.")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise FetchRefused("The URL is not valid.") from None
    if parts.scheme not in ("http", "https"):
        raise FetchRefused("Only http:// and https:// URLs can be fetched.")
    if not parts.hostname:
        raise FetchRefused("The URL has no host.")
    if parts.username or parts.password:
        raise FetchRefused("URLs with a user name or password are not allowed.")
    port = port or (443 if parts.scheme == "https" else 80)
    # http.client sends the request line as ASCII: percent-encode what a browser would.
    path = quote(parts.path or "/", safe="/%:@!$&'()*+,;=~-._")
    if parts.query:
        path += "?" + quote(parts.query, safe="/%:@!$&'()*+,;=?~-._")
    return parts.scheme, parts.hostname, port, path


class _ReadsUntilDeadline:
    """Every read waits only until the fetch's deadline. A socket timeout restarts at each read, so
    a server that sends a byte at a time could otherwise hold a worker for ever."""

    deadline: float  # set as soon as the socket exists

    def recv_into(self, *args, **kwargs):
        self.settimeout(_time_left(self.deadline))
        return super().recv_into(*args, **kwargs)


class _DeadlineSocket(_ReadsUntilDeadline, socket.socket):
    pass


class _DeadlineSSLSocket(_ReadsUntilDeadline, ssl.SSLSocket):
    pass


def _time_left(deadline: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError
    return remaining


def _connect(address: str, port: int, deadline: float) -> socket.socket:
    connected = socket.create_connection((address, port), _time_left(deadline))
    sock = _DeadlineSocket(fileno=connected.detach())
    sock.deadline = deadline
    sock.settimeout(_time_left(deadline))
    return sock


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, deadline: float):
        super().__init__(host, port)
        self.address, self.deadline = address, deadline

    def connect(self) -> None:
        self.sock = _connect(self.address, self.port, self.deadline)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, deadline: float):
        context = ssl.create_default_context()
        context.sslsocket_class = _DeadlineSSLSocket
        super().__init__(host, port, context=context)
        self.address, self.deadline = address, deadline

    def connect(self) -> None:
        # The certificate is checked against the host name, while the socket goes to the checked address.
        sock = _connect(self.address, self.port, self.deadline)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
        self.sock.deadline = self.deadline


def fetch_image(url: str, *, max_bytes: int | None = None, timeout: float | None = None) -> FetchedImage:
    """GET an image over http(s) with every guard on; raise FetchRefused with a clear reason."""
    max_bytes = max_bytes or settings.MEEPO_FETCH_MAX_BYTES
    timeout = timeout or settings.MEEPO_FETCH_TIMEOUT
    deadline = time.monotonic() + timeout
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port, path = _split(url)
        address = resolve_public_address(host, port)
        connection_class = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
        connection = connection_class(host, port, address, deadline)
        try:
            connection.request(
                "GET", path, headers={"User-Agent": settings.MEEPO_FETCH_USER_AGENT, "Accept": "image/*"}
            )
            response = connection.getresponse()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location")
                if not location:
                    raise FetchRefused("The server redirected without saying where.")
                url = urljoin(url, location)
                continue
            if response.status != 200:
                raise FetchRefused(f"The server answered {response.status} {response.reason}.")
            content_type = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
            if content_type and not content_type.startswith(IMAGE_CONTENT_TYPES):
                raise FetchRefused(f"The URL gives {content_type}, not an image.")
            declared = response.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise FetchRefused(f"The image is larger than {filesizeformat(max_bytes)}.")
            content = _read_capped(response, max_bytes=max_bytes)
            return FetchedImage(url=url, content=content, content_type=content_type)
        except TimeoutError:
            raise FetchRefused("The server took too long to answer.") from None
        except (OSError, http.client.HTTPException, UnicodeError) as error:
            raise FetchRefused(f"The image could not be downloaded ({error.__class__.__name__}).") from None
        finally:
            connection.close()
    raise FetchRefused(f"The URL redirected more than {MAX_REDIRECTS} times.")


def _read_capped(response, *, max_bytes: int) -> bytes:
    chunks, size = [], 0
    while chunk := response.read1(64 * 1024):
        size += len(chunk)
        if size > max_bytes:
            raise FetchRefused(f"The image is larger than {filesizeformat(max_bytes)}.")
        chunks.append(chunk)
    return b"".join(chunks)


@dataclass
class PoliteDelay:
    """Waits between requests to the same host, so a catalogue import does not hammer a shop's CDN."""

    seconds: float
    last_request: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait(self, url: str) -> None:
        try:
            host = (urlsplit(url).hostname or "").lower()
        except ValueError:  # "http://[bad": fetch_image refuses it, with the reason
            host = ""
        with self.lock:
            earliest = self.last_request.get(host, 0.0) + self.seconds
            pause = earliest - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            self.last_request[host] = time.monotonic()
