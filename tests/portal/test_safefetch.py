"""portal.safefetch against a real local HTTPS server (test CA): the happy path and every refusal, each with
its reason. Special-use addresses are refused before any connection, so nothing here connects anywhere but
loopback."""

# ruff: noqa: F811 - the fixtures imported from tests.https_host are test parameters here

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from portal import safefetch
from portal.safefetch import FetchRefused, address_problem, fetch, fetch_json
from tests.https_host import https_host, loopback_fetches  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
JWKS = {
    "keys": [
        {
            "kty": "EC",
            "crv": "P-256",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        }
    ]
}


def refused(url: str, code: str, fragment: str = "", **kwargs) -> FetchRefused:
    with pytest.raises(FetchRefused) as info:
        fetch(url, **kwargs)
    assert info.value.code == code, info.value.reason
    assert fragment in info.value.reason, info.value.reason
    assert info.value.url == url
    return info.value


# --- the happy path ---------------------------------------------------------------------------------


def test_fetches_a_document_over_https_from_a_vetted_address(loopback_fetches, https_host):
    url = https_host.serve("/jwks.json", JWKS, headers={"Cache-Control": "max-age=600"})
    result, document = fetch_json(url)
    assert document == JWKS
    assert result.status == 200 and result.address == "127.0.0.1"
    assert result.headers["cache-control"] == "max-age=600"
    assert https_host.hits("/jwks.json") == 1


def test_the_address_connected_to_is_the_one_checked(loopback_fetches, https_host):
    """DNS rebinding: the name is resolved once, by the fetcher, and the connection goes to that vetted address.
    A second answer (here the metadata address) is never used for this fetch, and refused for the next."""
    answers = [["127.0.0.1"], ["169.254.169.254"]]
    calls = []

    def rebinding(host, port):
        calls.append(host)
        return answers[min(len(calls) - 1, 1)]

    https_host.serve("/doc", {"ok": True})
    result = fetch(https_host.url("/doc", host="rebind.example.test"), resolver=rebinding)
    assert result.address == "127.0.0.1" and calls == ["rebind.example.test"]
    error = refused(https_host.url("/doc", host="rebind.example.test"), "address", resolver=rebinding)
    assert "rebind.example.test resolves to 169.254.169.254" in error.reason
    assert https_host.hits("/doc") == 1


# --- refusals before any connection ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://jwks.example.test/keys", "only https URLs are fetched, not http"),
        ("ftp://jwks.example.test/keys", "only https URLs are fetched"),
        ("/keys", "only https URLs are fetched"),
        ("https://user:secret@jwks.example.test/keys", "must not carry credentials"),
        ("", "non-empty string"),
    ],
)
def test_urls_that_are_not_plain_https_are_refused(loopback_fetches, url, fragment):
    refused(url, "url", fragment)


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("127.0.0.1", "a loopback address (RFC 1122)"),
        ("169.254.169.254", "a link-local address (RFC 3927), where cloud metadata services answer"),
        ("10.1.2.3", "a private address (RFC 1918)"),
        ("192.168.1.1", "a private address (RFC 1918)"),
        ("100.100.100.200", "carrier-grade NAT"),
        ("::1", "a loopback address (RFC 4291)"),
        ("fd00:ec2::254", "a unique-local address (RFC 4193)"),
    ],
)
def test_a_name_resolving_to_a_special_use_address_is_refused(loopback_fetches, https_host, address, fragment):
    loopback_fetches.names["evil.example.test"] = [address]
    https_host.serve("/jwks.json", JWKS)
    error = refused(https_host.url("/jwks.json", host="evil.example.test"), "address", fragment, allow_loopback=False)
    assert error.reason.startswith(f"evil.example.test resolves to {address}, which is ")
    assert https_host.hits("/jwks.json") == 0


def test_one_special_use_address_among_public_ones_refuses_the_name(loopback_fetches):
    # Any address may be the one connected to, so every address must be public.
    loopback_fetches.names["mixed.example.test"] = ["8.8.8.8", "10.0.0.7"]
    refused("https://mixed.example.test/jwks.json", "address", "resolves to 10.0.0.7, which is a private address")


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:5432/",
        "https://169.254.169.254/latest/meta-data/",
        "https://[::1]/jwks",
        "https://[::ffff:127.0.0.1]/jwks",
        "https://2130706433/",
    ],
)
def test_ip_literals_and_their_disguises_are_refused(url):
    error = refused(url, "address", "only public addresses are fetched", allow_loopback=False)
    assert "is a" in error.reason


def test_a_name_that_does_not_resolve_is_refused(loopback_fetches):
    refused("https://nowhere.invalid/jwks.json", "dns", "does not resolve")


def test_loopback_is_refused_unless_the_test_setting_allows_it(https_host, settings):
    settings.REGISTRAR_FETCH_ALLOW_LOOPBACK = False
    url = https_host.serve("/jwks.json", JWKS).replace("localhost", "127.0.0.1")
    refused(url, "address", "127.0.0.1 is a loopback address (RFC 1122)")
    assert https_host.hits("/jwks.json") == 0


# --- refusals of what the server answers -------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_are_not_followed(loopback_fetches, https_host, status):
    https_host.serve("/target", JWKS)
    url = https_host.serve("/moved", status=status, headers={"Location": https_host.url("/target")})
    refused(url, "redirect", f"the server answered {status} (a redirect to")
    assert https_host.hits("/target") == 0


@pytest.mark.parametrize("status", [201, 204, 403, 404, 500, 503])
def test_only_200_is_accepted(loopback_fetches, https_host, status):
    url = https_host.serve("/jwks.json", JWKS if status not in (204,) else b"", status=status)
    refused(url, "status", f"the server answered {status}; only 200 is accepted")


def test_a_body_over_the_cap_is_refused_by_its_declared_length(loopback_fetches, https_host):
    url = https_host.serve("/big", b"x" * 5000)
    refused(url, "too_large", "the body is 5000 bytes; at most 1024 are accepted", max_bytes=1024)


def test_a_body_over_the_cap_is_cut_off_while_reading(loopback_fetches, https_host):
    url = https_host.serve("/big", b"x" * 200_000, headers={"Content-Length": None})
    refused(url, "too_large", "the body is larger than 1024 bytes", max_bytes=1024)


def test_a_slow_body_is_cut_off_at_the_deadline(loopback_fetches, https_host):
    # Each byte arrives well within any per-read timeout; the whole body would take 4 s.
    url = https_host.serve("/slow", b'{"keys": []}' + b" " * 28, drip=0.1)
    refused(url, "timeout", "no complete answer within 0.5 s", timeout=0.5)


def test_a_compressed_body_is_refused(loopback_fetches, https_host):
    url = https_host.serve("/gz", b"\x1f\x8b\x08\x00", headers={"Content-Encoding": "gzip"})
    refused(url, "encoding", "gzip-encoded")


def test_invalid_json_is_refused_by_fetch_json(loopback_fetches, https_host):
    url = https_host.serve("/broken", b'{"keys": [')
    with pytest.raises(FetchRefused) as info:
        fetch_json(url)
    assert info.value.code == "json" and "not valid JSON" in info.value.reason


def test_json_beyond_i_json_is_refused(loopback_fetches, https_host):
    url = https_host.serve("/nan", b'{"n": NaN}')
    with pytest.raises(FetchRefused, match="json: the body is not valid JSON"):
        fetch_json(url)


# --- TLS and connections ----------------------------------------------------------------------------


def test_a_certificate_from_an_unknown_ca_is_refused(loopback_fetches, https_host, settings):
    settings.REGISTRAR_FETCH_CA_FILE = ""
    url = https_host.serve("/jwks.json", JWKS)
    refused(url, "tls", "the TLS handshake with localhost failed (certificate verify failed")


def test_the_certificate_must_name_the_url_host(loopback_fetches, https_host):
    # The connection goes to the vetted IP; TLS still checks the URL's host name (SNI) against the certificate.
    loopback_fetches.names["other.test"] = ["127.0.0.1"]
    https_host.serve("/jwks.json", JWKS)
    refused(https_host.url("/jwks.json", host="other.test"), "tls", "Hostname mismatch")


def test_a_closed_port_is_a_connect_refusal(loopback_fetches):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    refused(f"https://localhost:{port}/jwks.json", "connect", "could not connect to localhost")


# --- which addresses are public ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("0.0.0.0", "'this network'"),
        ("10.0.0.1", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("127.0.0.53", "loopback"),
        ("169.254.169.254", "link-local"),
        ("172.31.255.255", "private"),
        ("192.0.0.192", "IETF protocol assignment"),  # Oracle Cloud's metadata service
        ("192.0.2.10", "documentation"),
        ("192.88.99.1", "6to4 relay"),
        ("198.18.0.1", "benchmarking"),
        ("224.0.0.1", "multicast"),  # Python's is_global says True
        ("239.255.255.250", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "limited broadcast"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:169.254.169.254", "IPv4-mapped"),
        ("::7f00:1", "IPv4-compatible"),  # is_global says True
        ("64:ff9b::a00:1", "NAT64 address (RFC 6052) of 10.0.0.1, a private address"),  # is_global says True
        ("64:ff9b::a9fe:a9fe", "of 169.254.169.254, a link-local address"),
        ("64:ff9b:1::1", "local-use NAT64"),
        ("2001::1", "Teredo"),
        ("2001:db8::1", "documentation"),
        ("2002:7f00:1::", "6to4"),  # 6to4 of 127.0.0.1; is_global says True
        ("3fff::1", "documentation"),
        ("5f00::1", "segment-routing"),
        ("fc00::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fec0::1", "site-local"),  # is_global says True
        ("ff02::1", "multicast"),
        ("ff0e::1", "multicast"),  # is_global says True
        ("not-an-ip", "not an IP address"),
    ],
)
def test_special_use_addresses(address, fragment):
    problem = address_problem(address)
    assert problem is not None and fragment in problem


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4001:81b::200e", "64:ff9b::808:808"],
)
def test_public_addresses(address):
    assert address_problem(address) is None


def test_allow_loopback_opens_loopback_and_nothing_else():
    assert address_problem("127.0.0.1", allow_loopback=True) is None
    assert address_problem("::1", allow_loopback=True) is None
    assert address_problem("::ffff:127.0.0.1", allow_loopback=True) is not None
    assert address_problem("169.254.169.254", allow_loopback=True) is not None
    assert address_problem("10.0.0.1", allow_loopback=True) is not None


# --- the test-only setting ----------------------------------------------------------------------------


def _start(settings_module: str, env: dict) -> subprocess.CompletedProcess:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "DEBUG", "SECRET_KEY", "REDIS", "REGISTRAR_"))
    }
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=clean | {"DJANGO_SETTINGS_MODULE": settings_module} | env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_loopback_escape_hatch_is_refused_at_start_up_in_production():
    production = {
        "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/registrar",
        "DEBUG": "false",
        "ALLOWED_HOSTS": "registrar.example.com",
        "SECRET_KEY": "x" * 50,
        "REGISTRAR_ENCRYPTION_KEY": "5bOBxsI9hZ2CcMZSjTuAL2XDfw3wF5VpDJmX5dlQRqY=",
        "REGISTRAR_LOG_VERIFIER_KEY": "registrar.test/audit-log+23489aee+AXSUlzg7vliEFEkSv1ltpOE4hvrbzW/P86mqZQOZI9fZ",
    }
    assert _start("portal.settings", production).returncode == 0
    result = _start("portal.settings", production | {"REGISTRAR_FETCH_ALLOW_LOOPBACK": "true"})
    assert result.returncode != 0
    assert (
        "ImproperlyConfigured" in result.stderr and "REGISTRAR_FETCH_ALLOW_LOOPBACK is for tests only" in result.stderr
    )


def test_the_loopback_escape_hatch_is_accepted_by_the_test_settings():
    result = _start("portal.settings_test", {"REGISTRAR_FETCH_ALLOW_LOOPBACK": "true"})
    assert result.returncode == 0, result.stderr


def test_the_default_resolver_is_the_system_one():
    assert safefetch.resolve is safefetch.system_resolver
    assert "127.0.0.1" in safefetch.system_resolver("localhost", 443) or "::1" in safefetch.system_resolver(
        "localhost", 443
    )
