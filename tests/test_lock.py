"""requirements.lock is what `make test` and CI install: every dependency pyproject.toml names must be pinned
there, or a fresh clone fails on an import that a developer's own venv happened to satisfy."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"]) + list(project["optional-dependencies"]["test"])
    return {_canonical(re.match(r"[A-Za-z0-9._-]+", spec).group(0)) for spec in specs}


def _locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[_canonical(name)] = version
    return pins


def test_every_declared_dependency_is_pinned_in_the_lock():
    locked = _locked()
    missing = sorted(name for name in _declared() if name not in locked)
    assert missing == [], f"not in requirements.lock (run make lock): {missing}"


def test_the_lock_pins_exact_versions():
    assert all(version for version in _locked().values())
    assert _canonical("mcp") in _locked() and _canonical("Django") in _locked()
