"""The deployment recipes agree with each other: compose runs what the systemd units run (make prod-check runs
the units), every long-running process restarts itself, and the image is built the way docs/deploy.md says.

Docker cannot run on the test machine, so these read the files; the units' commands are exercised for real by
tests/portal/test_prod_check.py.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"
UNITS = {"web": "registrar-web.service", "worker": "registrar-worker@.service", "beat": "registrar-beat.service"}


def unit_lines(name: str) -> dict[str, list[str]]:
    lines: dict[str, list[str]] = {}
    for line in (CONTRIB / "systemd" / name).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            lines.setdefault(key, []).append(value)
    return lines


def normalised(argv: list[str]) -> list[str]:
    """A command without install paths and with the worker's node name generalised."""
    out = []
    for arg in argv:
        arg = arg.removeprefix("/opt/registrar/venv/bin/").removeprefix("/opt/registrar/")
        out.append(re.sub(r"^worker[^@]*@%[hH]$", "worker@HOST", arg))
    return out


def compose() -> dict:
    return yaml.safe_load((CONTRIB / "compose.yaml").read_text())


def test_compose_services_run_the_units_commands():
    services = compose()["services"]
    for service, unit in UNITS.items():
        (exec_start,) = unit_lines(unit)["ExecStart"]
        assert normalised(services[service]["command"]) == normalised(shlex.split(exec_start)), service


def test_every_process_restarts_itself():
    for unit in UNITS.values():
        lines = unit_lines(unit)
        assert lines["Restart"] == ["always"], unit
        assert lines["EnvironmentFile"] == ["/etc/registrar/registrar.env"], unit
        assert lines["User"] == ["registrar"], unit
    services = compose()["services"]
    for name in ("web", "worker", "beat", "postgres", "redis", "keycloak"):
        assert services[name]["restart"] == "unless-stopped", name
        assert "healthcheck" in services[name], name
    assert services["migrate"]["restart"] == "no"
    assert services["keycloak"]["profiles"] == ["keycloak"]


def test_compose_starts_registrar_after_its_dependencies_and_migrations():
    services = compose()["services"]
    for name in ("web", "worker", "beat"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"


def test_web_health_check_uses_readyz_and_worker_metrics_have_a_private_directory():
    services = compose()["services"]
    assert "/readyz" in " ".join(services["web"]["healthcheck"]["test"])
    assert "check_heartbeats" in services["beat"]["healthcheck"]["test"]
    for name in ("web", "worker"):
        assert services[name]["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/run/registrar"
        assert services[name]["volumes"][0]["type"] == "tmpfs"
    worker_unit = unit_lines(UNITS["worker"])
    assert "PROMETHEUS_MULTIPROC_DIR=/run/registrar-worker-%i" in worker_unit["Environment"]
    assert "REGISTRAR_WORKER_METRICS_PORT=91%i" in worker_unit["Environment"]


def test_only_one_beat():
    assert "replicas" not in compose()["services"]["beat"].get("deploy", {})
    assert "ONE" in (CONTRIB / "systemd" / UNITS["beat"]).read_text()


def test_dockerfile_is_slim_non_root_and_collects_static_files_at_build():
    dockerfile = (CONTRIB / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert re.search(r"^USER registrar$", dockerfile, re.MULTILINE)
    assert dockerfile.index("collectstatic") < dockerfile.index("USER registrar")
    assert "--constraint requirements.lock" in dockerfile
    (cmd,) = re.findall(r"^CMD (.*)$", dockerfile, re.MULTILINE)
    (exec_start,) = unit_lines(UNITS["web"])["ExecStart"]
    assert normalised(yaml.safe_load(cmd)) == normalised(shlex.split(exec_start))


def test_the_agent_api_pool_runs_the_web_command_on_its_own_port():
    """Issue 23: the agent API and the human pages in separate gunicorn pools, in the units and in compose."""
    web, api = unit_lines(UNITS["web"]), unit_lines("registrar-api.service")
    assert api["ExecStart"] == web["ExecStart"]
    assert "GUNICORN_BIND=127.0.0.1:8001" in api["Environment"]
    assert api["RuntimeDirectory"] != web["RuntimeDirectory"]  # each pool its own metric files
    assert api["Restart"] == ["always"]
    services = compose()["services"]
    assert services["api"]["command"] == services["web"]["command"]
    assert services["api"]["environment"]["GUNICORN_BIND"] == "0.0.0.0:8001"
    assert "8001/readyz" in " ".join(services["api"]["healthcheck"]["test"])
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert "location ~ ^/(oauth2|api)/" in deploy and "proxy_pass http://127.0.0.1:8001;" in deploy
