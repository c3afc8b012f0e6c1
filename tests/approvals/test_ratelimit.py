"""approvals.ratelimit against a real Redis (production) and Django's local-memory cache (tests, demo)."""

from __future__ import annotations

import os

import pytest
import redis

from approvals import ratelimit


def _redis_db() -> int:
    """A Redis database of this test process's own: make test runs the PostgreSQL and the SQLite stages at once,
    each with two xdist workers, and the fixture flushes its database (one shared database made a test in one
    stage count the other's keys)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    base = 10 if os.environ.get("REGISTRAR_TEST_DATABASE") == "sqlite" else 14
    return base + (int(worker) % 2 if worker.isdigit() else 0)


REDIS_URL = os.environ.get("TEST_REDIS_URL", f"redis://127.0.0.1:6379/{_redis_db()}")


@pytest.fixture
def redis_cache(settings):
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:  # make test starts Redis; a bare pytest run without it must say so
        pytest.fail(f"Redis is not reachable at {REDIS_URL} (start it, or run make test)")
    client.flushdb()
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    yield client
    client.flushdb()


def test_redis_counts_every_limit_in_one_round_trip_and_sets_the_window_expiry(redis_cache, monkeypatch):
    redis_cache.script_flush()  # the first request loads the counting script, the others only run it
    sent: list[str] = []
    original = redis.Redis.execute_command

    def spy(self, *args, **kwargs):
        sent.append(str(args[0]).split()[0].upper())
        return original(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "execute_command", spy)

    per_request = []
    for _ in range(3):
        sent.clear()
        assert ratelimit.check(("address", "10.0.0.1", "3/m"), ("token", "rat_secret_value", "5/m")) is None
        per_request.append(list(sent))

    assert per_request[0][-1] == "EVALSHA" and "SCRIPT" in per_request[0]  # loaded once, after NOSCRIPT
    assert per_request[1:] == [["EVALSHA"]] * 2  # then one command per request, for both limits
    keys = sorted(k.decode() for k in redis_cache.keys("rl:*"))
    assert len(keys) == 2 and all(k.startswith(("rl:address:", "rl:token:")) for k in keys)
    assert not any("rat_secret_value" in k for k in keys)  # the credential is hashed, never stored
    assert all(0 < redis_cache.ttl(k) <= 61 for k in keys)
    assert sorted(int(redis_cache.get(k)) for k in keys) == [3, 3]


def test_redis_over_the_limit_names_the_scope_and_the_wait(redis_cache):
    for _ in range(2):
        assert ratelimit.check(("address", "10.0.0.2", "10/h"), ("token", "rat_x", "2/h")) is None
    limited = ratelimit.check(("address", "10.0.0.2", "10/h"), ("token", "rat_x", "2/h"))
    assert limited is not None and limited.scope == "token" and 1 <= limited.retry_after <= 3600
    # the address limit is reported first when both are over
    for _ in range(10):
        ratelimit.check(("address", "10.0.0.3", "1/h"))
    both = ratelimit.check(("address", "10.0.0.3", "1/h"), ("token", "rat_x", "2/h"))
    assert both.scope == "address"


def test_redis_down_fails_open_with_a_warning(settings, caplog):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:9/0"}
    }
    with caplog.at_level("WARNING", logger="approvals.ratelimit"):
        assert ratelimit.check(("address", "10.0.0.4", "1/h"), ("token", "rat_y", "1/h")) is None
    assert "event=ratelimit_unavailable scopes=address,token" in caplog.text


def test_local_memory_cache_counts_the_same_way(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "rl-test"}}
    from django.core.cache import cache

    cache.clear()
    assert ratelimit.check(("address", "10.0.0.5", "2/m")) is None
    assert ratelimit.check(("address", "10.0.0.5", "2/m")) is None
    limited = ratelimit.check(("address", "10.0.0.5", "2/m"))
    assert limited.scope == "address" and 1 <= limited.retry_after <= 60


def test_disabled_and_malformed_rates():
    assert ratelimit.check(("address", "10.0.0.6", "0"), ("token", "t", "")) is None
    with pytest.raises(ValueError, match="must look like 120/m"):
        ratelimit.check(("address", "10.0.0.6", "many/fortnight"))
