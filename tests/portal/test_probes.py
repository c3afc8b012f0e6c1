"""Probes from REGISTRAR_PROBE_NETWORKS skip the host and HTTPS checks on /healthz, /readyz and /metrics;
nobody else and nothing else does."""

from __future__ import annotations

import ipaddress

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from portal.env import parse_networks

# Production shape: DEBUG off, one allowed host, HTTPS redirect on.
PRODUCTION = {"DEBUG": False, "ALLOWED_HOSTS": ["registrar.example.com"], "SECURE_SSL_REDIRECT": True}
POD_HOST = "10.1.2.3:8000"  # what a kubelet or load balancer sends: the process's own address


@pytest.fixture
def production():
    with override_settings(**PRODUCTION):
        yield


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
@pytest.mark.django_db
def test_loopback_probe_with_the_pods_address_as_host_over_http_is_answered(client, production, path):
    response = client.get(path, HTTP_HOST=POD_HOST, REMOTE_ADDR="127.0.0.1")
    assert response.status_code == 200


def test_a_non_probe_address_with_a_bad_host_is_still_refused(client, production):
    response = client.get("/healthz", HTTP_HOST=POD_HOST, REMOTE_ADDR="203.0.113.5")
    assert response.status_code == 400


def test_a_non_probe_address_with_a_good_host_over_http_is_redirected_to_https(client, production):
    response = client.get("/healthz", HTTP_HOST="registrar.example.com", REMOTE_ADDR="203.0.113.5")
    assert response.status_code == 301
    assert response["Location"] == "https://registrar.example.com/healthz"


def test_through_a_proxy_on_loopback_a_request_is_not_a_probe(client, production):
    # The proxy's peer address is loopback, but it adds a forwarding header a client cannot remove.
    for header in ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP", "HTTP_X_FORWARDED_PROTO"):
        response = client.get("/healthz", HTTP_HOST=POD_HOST, REMOTE_ADDR="127.0.0.1", **{header: "203.0.113.5"})
        assert response.status_code == 400, header


def test_only_the_probe_paths_and_safe_methods_are_exempt(client, production):
    assert client.get("/accounts/login/", HTTP_HOST=POD_HOST, REMOTE_ADDR="127.0.0.1").status_code == 400
    assert client.get("/healthz/", HTTP_HOST=POD_HOST, REMOTE_ADDR="127.0.0.1").status_code == 400
    assert client.post("/healthz", HTTP_HOST=POD_HOST, REMOTE_ADDR="127.0.0.1").status_code == 400


def test_head_is_a_probe_too(client, production):
    assert client.head("/healthz", HTTP_HOST=POD_HOST, REMOTE_ADDR="::1").status_code == 200


@pytest.mark.django_db
def test_configured_networks_replace_loopback(client, production):
    with override_settings(REGISTRAR_PROBE_NETWORKS=parse_networks(["10.0.0.0/8"], "X")):
        assert client.get("/healthz", HTTP_HOST=POD_HOST, REMOTE_ADDR="10.20.30.40").status_code == 200
        assert client.get("/healthz", HTTP_HOST=POD_HOST, REMOTE_ADDR="::ffff:10.20.30.40").status_code == 200
        assert client.get("/healthz", HTTP_HOST=POD_HOST, REMOTE_ADDR="127.0.0.1").status_code == 400
        assert client.get("/healthz", HTTP_HOST=POD_HOST, REMOTE_ADDR="11.0.0.1").status_code == 400
        assert client.get("/healthz", HTTP_HOST=POD_HOST, REMOTE_ADDR="not-an-address").status_code == 400


def test_probe_networks_are_parsed_strictly():
    assert parse_networks(["127.0.0.0/8", "::1", "10.1.2.3"], "X") == (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("10.1.2.3/32"),
    )
    with pytest.raises(ImproperlyConfigured, match="REGISTRAR_PROBE_NETWORKS.*'10.0.0.0/33'"):
        parse_networks(["10.0.0.0/33"], "REGISTRAR_PROBE_NETWORKS")
    with pytest.raises(ImproperlyConfigured, match="'intranet'"):
        parse_networks(["intranet"], "REGISTRAR_PROBE_NETWORKS")
