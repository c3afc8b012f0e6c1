"""Safe outbound fetches of URLs that someone else chose (a ``jwks_uri``, a Client ID Metadata Document, …).

A URL an agent sends us must not turn Registrar into a proxy into its own network (SSRF). ``fetch`` enforces,
and every refusal raises ``FetchRefused`` with a ``reason`` for a person and a stable ``code``:

============  =================================================================================================
code          refused when
============  =================================================================================================
``url``       not an absolute ``https`` URL, or it carries credentials (``user:pass@``)
``dns``       the host does not resolve
``address``   ANY address the host resolves to (or the IP literal) is special-use: RFC 6890 and the IANA
              special-purpose registries — loopback, private (RFC 1918), carrier-grade NAT, link-local (cloud
              metadata at 169.254.169.254), multicast, reserved, documentation, benchmarking, IPv6 unique-local,
              link-local and site-local, IPv4-mapped/-compatible, 6to4, Teredo, NAT64 of a special-use IPv4 …
``connect``   no vetted address accepted the connection
``tls``       the TLS handshake failed (the certificate must be valid for the URL's host name)
``timeout``   the whole exchange — DNS, connect, TLS, request, every byte of the body — took longer than the
              deadline (a body dripping in slowly is cut off at the deadline, not per read)
``redirect``  the answer is a 3xx: redirects are never followed
``status``    the answer is anything but 200
``too_large`` the body is, or says it is, larger than the cap
``encoding``  the body is compressed (only ``identity`` is accepted: no decompression bombs)
``protocol``  the server broke HTTP/1.1
``json``      (``fetch_json``) the body is not I-JSON (``portal.jsonbody``)
============  =================================================================================================

The address check happens **when connecting**, on the address actually connected to: the network backend
below resolves the host itself, checks every address, and opens the TCP connection to a vetted IP, while TLS
still verifies the certificate against the URL's host name (SNI). A DNS answer that changes between a check and
the connection (DNS rebinding) therefore cannot reach a special-use address. No proxy from the environment is
used (a proxy would make the proxy's address the one checked), and nothing is cached.

Why not a library: the SSRF guards published for httpx are async-only (``httpx-secure``, ``safehttpx``,
``drawbridge``), young single-maintainer 0.x releases, or ask a public DNS service (``safehttpx``); the
``requests``-based ``advocate`` is unmaintained. Registrar fetches from synchronous Django views and Celery
workers and needs the deadline, size, status and redirect rules anyway, so this is a small module on httpcore
(already a dependency, through httpx).

Settings: ``REGISTRAR_FETCH_TIMEOUT_SECONDS`` and ``REGISTRAR_FETCH_MAX_BYTES`` (defaults when the caller gives
none), ``REGISTRAR_FETCH_CA_FILE`` (extra trusted CA certificates), and the test-only
``REGISTRAR_FETCH_ALLOW_LOOPBACK`` (refused at start-up outside test/embedded mode; see portal/settings.py).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import certifi
import httpcore
import httpx

from portal import jsonbody

DEFAULT_TIMEOUT_SECONDS = 5.0
DEFAULT_MAX_BYTES = 64 * 1024
_CHUNK = 16 * 1024

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]


class FetchRefused(Exception):
    """A fetch was refused or failed. ``reason`` is for a person (and an API's error_description); ``code``
    is one stable word (see the module docstring) for callers and logs."""

    def __init__(self, code: str, reason: str, *, url: str = "") -> None:
        self.code = code
        self.reason = reason
        self.url = url
        super().__init__(f"{code}: {reason}")


@dataclass(frozen=True)
class FetchResult:
    """A 200 answer: ``body`` (at most the cap), ``headers`` (names lower-cased, repeated values joined by
    ", "), and ``address``, the IP the connection actually went to."""

    url: str
    status: int
    headers: Mapping[str, str]
    body: bytes
    address: str


# --- which addresses are public --------------------------------------------------------------------


def _net(cidr: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(cidr)


# Checked in order; the first match names the reason. Python's ``is_global`` (checked last) misses several of
# these depending on its version — multicast, IPv4-compatible and site-local IPv6, 6to4, NAT64 — so the table
# is explicit. Sources: RFC 6890 and the IANA IPv4/IPv6 Special-Purpose Address Registries.
_SPECIAL_V4 = [
    (_net("0.0.0.0/8"), "a 'this network' address (RFC 791)"),
    (_net("10.0.0.0/8"), "a private address (RFC 1918)"),
    (_net("100.64.0.0/10"), "a shared carrier-grade NAT address (RFC 6598)"),
    (_net("127.0.0.0/8"), "a loopback address (RFC 1122)"),
    (_net("169.254.0.0/16"), "a link-local address (RFC 3927), where cloud metadata services answer"),
    (_net("172.16.0.0/12"), "a private address (RFC 1918)"),
    (_net("192.0.0.0/24"), "an IETF protocol assignment (RFC 6890)"),
    (_net("192.0.2.0/24"), "a documentation address (RFC 5737)"),
    (_net("192.88.99.0/24"), "a deprecated 6to4 relay address (RFC 7526)"),
    (_net("192.168.0.0/16"), "a private address (RFC 1918)"),
    (_net("198.18.0.0/15"), "a benchmarking address (RFC 2544)"),
    (_net("198.51.100.0/24"), "a documentation address (RFC 5737)"),
    (_net("203.0.113.0/24"), "a documentation address (RFC 5737)"),
    (_net("224.0.0.0/4"), "a multicast address (RFC 5771)"),
    (_net("255.255.255.255/32"), "the limited broadcast address (RFC 919)"),
    (_net("240.0.0.0/4"), "a reserved address (RFC 1112)"),
]
_SPECIAL_V6 = [
    (_net("::/128"), "the unspecified address (RFC 4291)"),
    (_net("::1/128"), "a loopback address (RFC 4291)"),
    (_net("::ffff:0:0/96"), "an IPv4-mapped address (RFC 4291)"),
    (_net("::/96"), "a deprecated IPv4-compatible address (RFC 4291)"),
    (_net("64:ff9b:1::/48"), "a local-use NAT64 address (RFC 8215)"),
    (_net("100::/64"), "a discard-only address (RFC 6666)"),
    (_net("2001::/23"), "an IETF protocol assignment such as Teredo (RFC 2928, RFC 4380)"),
    (_net("2001:db8::/32"), "a documentation address (RFC 3849)"),
    (_net("2002::/16"), "a deprecated 6to4 address (RFC 7526)"),
    (_net("3fff::/20"), "a documentation address (RFC 9637)"),
    (_net("5f00::/16"), "a segment-routing SID (RFC 9602)"),
    (_net("fc00::/7"), "a unique-local address (RFC 4193)"),
    (_net("fe80::/10"), "a link-local address (RFC 4291)"),
    (_net("fec0::/10"), "a deprecated site-local address (RFC 3879)"),
    (_net("ff00::/8"), "a multicast address (RFC 4291)"),
]
_NAT64 = _net("64:ff9b::/96")


def address_problem(address: str | Address, *, allow_loopback: bool = False) -> str | None:
    """Why ``address`` is not a public unicast address (a phrase such as "a loopback address (RFC 1122)"), or
    None if it is. ``allow_loopback`` lets 127.0.0.0/8 and ::1 through (tests only)."""
    try:
        ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    except ValueError:
        return "not an IP address"
    if allow_loopback and ip.is_loopback:
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64:  # the well-known NAT64 prefix reaches the IPv4 address it embeds (RFC 6052)
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            problem = address_problem(embedded)
            return f"a NAT64 address (RFC 6052) of {embedded}, {problem}" if problem else None
        table = _SPECIAL_V6
    else:
        table = _SPECIAL_V4
    for network, reason in table:
        if ip in network:
            return reason
    if not ip.is_global:
        return "not a globally reachable address (IANA special-purpose registry)"
    return None


# --- resolving and connecting ----------------------------------------------------------------------


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (the system resolver), in its order, without duplicates."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# The resolver fetch() uses unless given one; tests replace it (monkeypatch) to make a name resolve anywhere.
resolve: Resolver = system_resolver
# getaddrinfo() cannot be given a timeout: it runs in this pool, and the fetch stops waiting at its deadline.
# One pool per process, made on first use: a pool inherited through fork() has no threads behind it.
_dns: tuple[int, ThreadPoolExecutor] | None = None


def _dns_pool() -> ThreadPoolExecutor:
    global _dns
    if _dns is None or _dns[0] != os.getpid():
        _dns = (os.getpid(), ThreadPoolExecutor(max_workers=4, thread_name_prefix="safefetch-dns"))
    return _dns[1]


class _DeadlineStream(httpcore.NetworkStream):
    """A stream whose every read and write is bounded by the fetch's deadline, not by a per-call timeout."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _remaining(self, timeout: float | None) -> float:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0:
            raise httpcore.ReadTimeout("deadline passed")
        return remaining if timeout is None else min(timeout, remaining)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._remaining(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._remaining(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, self._remaining(timeout)), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _VettingBackend(httpcore.NetworkBackend):
    """Resolves the host, refuses it if any of its addresses is special-use, and connects to a vetted IP."""

    def __init__(self, *, resolver: Resolver, deadline: float, allow_loopback: bool) -> None:
        self._resolver = resolver
        self._deadline = deadline
        self._allow_loopback = allow_loopback
        self._tcp = httpcore.SyncBackend()
        self.connected_address = ""

    def _resolve(self, host: str, port: int) -> list[str]:
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            return [str(literal)]
        future = _dns_pool().submit(self._resolver, host, port)
        try:
            addresses = list(future.result(timeout=max(0.0, self._deadline - time.monotonic())))
        except FutureTimeout:
            raise httpcore.ConnectTimeout(f"resolving {host} took too long")
        except (OSError, UnicodeError) as exc:
            raise FetchRefused("dns", f"the host {host} does not resolve ({exc})")
        if not addresses:
            raise FetchRefused("dns", f"the host {host} does not resolve")
        return addresses

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = self._resolve(host, port)
        for address in addresses:
            problem = address_problem(address, allow_loopback=self._allow_loopback)
            if problem:
                where = address if host == address else f"{host} resolves to {address}, which"
                raise FetchRefused("address", f"{where} is {problem}; only public addresses are fetched")
        last_error: Exception | None = None
        for address in addresses:
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise httpcore.ConnectTimeout("deadline passed")
            try:
                stream = self._tcp.connect_tcp(
                    address,
                    port,
                    timeout=min(timeout or remaining, remaining),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
                continue
            peer = stream.get_extra_info("server_addr")
            # Belt and braces: the socket is connected to exactly the address that was vetted.
            if not peer or ipaddress.ip_address(peer[0].split("%")[0]) != ipaddress.ip_address(address.split("%")[0]):
                stream.close()
                raise FetchRefused("address", f"connected to {peer!r} instead of the vetted {address}")
            self.connected_address = address
            return _DeadlineStream(stream, self._deadline)
        raise last_error or httpcore.ConnectError(f"could not connect to {host}")

    def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:  # pragma: no cover
        raise FetchRefused("url", "unix sockets are never fetched")

    def sleep(self, seconds: float) -> None:  # pragma: no cover - retries are off
        time.sleep(seconds)


# --- the fetch -------------------------------------------------------------------------------------


def _setting(name: str, default: Any) -> Any:
    from django.conf import settings

    return getattr(settings, name, default) if settings.configured else default


@functools.lru_cache(maxsize=4)
def _context_for(extra_ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=certifi.where())
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if extra_ca_file:
        context.load_verify_locations(cafile=extra_ca_file)
    return context


def ssl_context() -> ssl.SSLContext:
    """Certificate and host name verification against certifi's CAs (plus REGISTRAR_FETCH_CA_FILE, if set).
    Built once per CA file and shared: loading the CA bundle costs more than a TLS handshake."""
    return _context_for(_setting("REGISTRAR_FETCH_CA_FILE", "") or "")


def host_of(url: str) -> str:
    """The URL's host, for logs (never the path or query, which may carry tokens)."""
    try:
        return httpx.URL(url).host or "?"
    except (httpx.InvalidURL, TypeError):
        return "?"


def _parse(url: str) -> httpx.URL:
    if not isinstance(url, str) or not url:
        raise FetchRefused("url", "the URL must be a non-empty string", url=str(url)[:200])
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FetchRefused("url", f"the URL is not valid ({exc})", url=url)
    if parsed.scheme != "https":
        raise FetchRefused("url", f"only https URLs are fetched, not {parsed.scheme or 'a relative URL'}", url=url)
    if not parsed.host:
        raise FetchRefused("url", "the URL has no host", url=url)
    if parsed.userinfo:
        raise FetchRefused("url", "the URL must not carry credentials (user:password@)", url=url)
    return parsed


def _tls_error(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def fetch(
    url: str,
    *,
    max_bytes: int | None = None,
    timeout: float | None = None,
    accept: str = "application/json",
    headers: Mapping[str, str] | None = None,
    resolver: Resolver | None = None,
    context: ssl.SSLContext | None = None,
    allow_loopback: bool | None = None,
) -> FetchResult:
    """GET ``url`` by the rules in the module docstring; the 200 answer, or FetchRefused naming the reason.

    ``max_bytes`` caps the body and ``timeout`` (seconds) bounds the WHOLE fetch; both default to the
    REGISTRAR_FETCH_* settings. ``resolver`` (host, port) -> addresses replaces DNS, ``context`` the TLS
    context, ``allow_loopback`` the test-only setting; callers other than tests leave them alone.
    """
    max_bytes = int(max_bytes or _setting("REGISTRAR_FETCH_MAX_BYTES", DEFAULT_MAX_BYTES))
    timeout = float(timeout or _setting("REGISTRAR_FETCH_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS))
    if allow_loopback is None:
        allow_loopback = bool(_setting("REGISTRAR_FETCH_ALLOW_LOOPBACK", False))
    parsed = _parse(url)
    deadline = time.monotonic() + timeout
    backend = _VettingBackend(resolver=resolver or resolve, deadline=deadline, allow_loopback=allow_loopback)
    request_headers = {
        "Host": parsed.netloc.decode("ascii"),
        "Accept": accept,
        "Accept-Encoding": "identity",
        "User-Agent": f"Registrar/{_setting('REGISTRAR_VERSION', '0')} (safe fetcher)",
        "Connection": "close",
        **(headers or {}),
    }
    limits = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    try:
        with httpcore.ConnectionPool(
            ssl_context=context or ssl_context(),
            network_backend=backend,
            retries=0,
            max_connections=1,
            max_keepalive_connections=0,
            http1=True,
            http2=False,
        ) as pool:
            target = httpcore.URL(scheme=b"https", host=parsed.raw_host, port=parsed.port, target=parsed.raw_path)
            with pool.stream(
                "GET", target, headers=list(request_headers.items()), extensions={"timeout": limits}
            ) as response:
                answer_headers = _headers(response.headers)
                _check_answer(response.status, answer_headers, max_bytes, url)
                body = _read_capped(response, max_bytes, url)
    except FetchRefused as exc:
        exc.url = exc.url or url
        raise
    except (httpcore.TimeoutException, FutureTimeout):
        raise FetchRefused("timeout", f"no complete answer within {timeout:g} s", url=url)
    except httpcore.ConnectError as exc:
        tls = _tls_error(exc)
        if tls is not None:
            if isinstance(tls, ssl.SSLCertVerificationError):
                detail = f"certificate verify failed: {tls.verify_message}"
            else:
                detail = getattr(tls, "reason", None) or str(tls)
            raise FetchRefused("tls", f"the TLS handshake with {parsed.host} failed ({detail})", url=url)
        raise FetchRefused("connect", f"could not connect to {parsed.host} ({exc or 'connection refused'})", url=url)
    except (httpcore.ProtocolError, httpcore.NetworkError) as exc:
        tls = _tls_error(exc)
        if tls is not None:
            raise FetchRefused("tls", f"the TLS connection with {parsed.host} failed ({tls})", url=url)
        raise FetchRefused("protocol", f"the server did not answer with valid HTTP/1.1 ({exc})", url=url)
    return FetchResult(url=url, status=200, headers=answer_headers, body=body, address=backend.connected_address)


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        out[key] = f"{out[key]}, {text}" if key in out else text
    return out


def _check_answer(status: int, headers: Mapping[str, str], max_bytes: int, url: str) -> None:
    if 300 <= status < 400:
        location = headers.get("location", "")[:200]
        raise FetchRefused(
            "redirect",
            f"the server answered {status} (a redirect{f' to {location!r}' if location else ''}); "
            "redirects are not followed",
            url=url,
        )
    if status != 200:
        raise FetchRefused("status", f"the server answered {status}; only 200 is accepted", url=url)
    encoding = headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchRefused(
            "encoding", f"the body is {encoding}-encoded; only uncompressed bodies are accepted", url=url
        )
    declared = headers.get("content-length", "").strip()
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchRefused("too_large", f"the body is {int(declared)} bytes; at most {max_bytes} are accepted", url=url)


def _read_capped(response: httpcore.Response, max_bytes: int, url: str) -> bytes:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_stream():
        size += len(chunk)
        if size > max_bytes:
            raise FetchRefused("too_large", f"the body is larger than {max_bytes} bytes", url=url)
        chunks.append(chunk)
    return b"".join(chunks)


def fetch_json(url: str, **kwargs: Any) -> tuple[FetchResult, Any]:
    """``fetch`` then parse the body as I-JSON; FetchRefused("json", …) if it is not."""
    result = fetch(url, **kwargs)
    try:
        return result, jsonbody.loads(result.body)
    except ValueError as exc:
        raise FetchRefused("json", f"the body is not valid JSON ({exc})", url=url)


__all__ = [
    "FetchRefused",
    "FetchResult",
    "address_problem",
    "fetch",
    "fetch_json",
    "host_of",
    "resolve",
    "ssl_context",
    "system_resolver",
]
