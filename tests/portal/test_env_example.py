"""contrib/registrar.env.example lists every setting portal/settings.py reads, with its default and secrecy."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ROOT / "portal" / "settings.py"
EXAMPLE = ROOT / "contrib" / "registrar.env.example"

# Every environment read in settings.py goes through these readers (portal/env.py); the name may sit on the next line.
ENV_READ = re.compile(r"\benv_(?:str|bool|int|list|required|float)\(\s*[\"']([A-Z][A-Z0-9_]*)[\"']")
ASSIGNMENT = re.compile(r"^#?([A-Z][A-Z0-9_]*)=(.*)$")
# Public keys (the audit log's verifier keys) end in _KEY too; they are not secrets.
LOOKS_SECRET = re.compile(r"(SECRET|PASSWORD|(?<!RATE_PER)_TOKEN$|(?<!VERIFIER)_KEY$|(?<!VERIFIER)_KEYS$|WEBHOOK)")


def settings_reads(text: str) -> set[str]:
    return set(ENV_READ.findall(text))


def example_entries(text: str) -> dict[str, dict]:
    """{NAME: {"active": bool, "value": str, "doc": [comment lines right above]}} for every KEY= line."""
    entries: dict[str, dict] = {}
    doc: list[str] = []
    for line in text.splitlines():
        match = ASSIGNMENT.match(line)
        if match:
            entries[match.group(1)] = {"active": not line.startswith("#"), "value": match.group(2), "doc": doc}
            doc = []
        elif line.startswith("#"):
            doc = [*doc, line]
        else:
            doc = []
    return entries


def test_the_parser_finds_reads_spread_over_lines():
    sample = (
        'A = env_str("ONE")\nB = env_str(\n    "TWO",\n    "x")\nC = env_int("THREE", 1)\nD = env_list( "FOUR", [])\n'
    )
    assert settings_reads(sample) == {"ONE", "TWO", "THREE", "FOUR"}


def test_every_setting_read_in_settings_is_in_the_example():
    reads = settings_reads(SETTINGS.read_text())
    assert len(reads) > 50  # the parser still finds the reads
    missing = sorted(reads - example_entries(EXAMPLE.read_text()).keys())
    assert not missing, f"add these to contrib/registrar.env.example (with default and secret): {missing}"


def test_a_new_setting_missing_from_the_example_is_caught():
    reads = settings_reads(SETTINGS.read_text() + '\nNEW_ONE = env_bool("REGISTRAR_SOMETHING_NEW", False)\n')
    assert "REGISTRAR_SOMETHING_NEW" in reads - example_entries(EXAMPLE.read_text()).keys()


def test_settings_read_the_environment_only_through_the_typed_readers():
    text = SETTINGS.read_text()
    assert "os.environ" not in text and "getenv" not in text


def test_each_entry_states_its_default_and_whether_it_is_secret():
    for name, entry in example_entries(EXAMPLE.read_text()).items():
        doc = " ".join(entry["doc"])
        assert doc.startswith(f"# {name} — "), f"{name}: the comment above it must start with '# {name} — '"
        assert "default:" in doc, f"{name}: no 'default:'"
        secret = re.search(r"secret: (yes|no)", doc)
        assert secret, f"{name}: no 'secret: yes|no'"
        if LOOKS_SECRET.search(name):
            assert secret.group(1) == "yes", f"{name} looks like a secret but is marked 'secret: no'"


def test_active_lines_are_plain_assignments_systemd_and_compose_both_read():
    entries = example_entries(EXAMPLE.read_text())
    active = {name: entry["value"] for name, entry in entries.items() if entry["active"]}
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "REGISTRAR_ENCRYPTION_KEY", "ALLOWED_HOSTS"} <= active.keys()
    for name, value in active.items():
        assert value and value == value.strip() and not value.startswith(("'", '"')), f"{name}={value!r}"
    # Secrets ship as placeholders, never as values someone could deploy by accident.
    for name in ("SECRET_KEY", "REGISTRAR_ENCRYPTION_KEY"):
        assert active[name] == "CHANGE-ME"
