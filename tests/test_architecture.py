"""The layers hold: portal (kernel) <- inventory <- approvals.

Three checks, each able to fail (the self-tests below feed each one a violation):

- the import contract in ``.importlinter`` (``lint-imports``): no module imports from a higher layer, not even
  inside a function;
- no app looks up another app's model or module by name (``apps.get_model("approvals", …)``,
  ``import_module("approvals.services")``): an import graph cannot see those, so they are found in the source;
- no lower layer names a higher layer's table in a string (raw SQL reading or writing its rows).

Where a lower layer needs something from a higher one, the higher one registers it at start-up
(``inventory.hooks``, ``portal.home``, ``portal.context_processors``, ``portal.admin``).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from django.apps import apps

ROOT = Path(__file__).resolve().parents[1]
# Lowest first: an app may use its own layer and those before it.
LAYERS = ("portal", "inventory", "approvals")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

# Violations that other work in flight removes, as (file, what it reaches). Each entry names who removes it;
# nothing else may be added here.
KNOWN: set[tuple[str, str]] = set()


def _run_lint_imports(cwd: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(config), "--no-cache", "--no-logo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_contract_is_kept():
    result = _run_lint_imports(ROOT, ROOT / ".importlinter")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def test_the_import_contract_fails_on_a_backwards_import(tmp_path):
    """The same contract over three tiny packages where the kernel imports upwards, inside a function."""
    for package, body in {
        "portal": "def f():\n    from inventory import thing\n",
        "inventory": "thing = 1\n",
        "approvals": "from inventory import thing\n",
    }.items():
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(body)
    config = tmp_path / ".importlinter"
    config.write_text((ROOT / ".importlinter").read_text())
    result = _run_lint_imports(tmp_path, config)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout and "portal -> inventory" in result.stdout, result.stdout


# --- lookups by name ---------------------------------------------------------------------------------------


def _sources(app: str):
    for path in sorted((ROOT / app).rglob("*.py")):
        if "migrations" not in path.parts:
            yield path


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def lookups_by_name(source: str, app: str) -> list[tuple[int, str]]:
    """(line, call) for each ``get_model`` / ``import_module`` in ``source`` (a module of ``app``) that reaches
    another of Registrar's apps, or whose target is not a literal (then nobody can tell what it reaches)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name not in ("get_model", "import_module"):
            continue
        first = _literal(node.args[0]) if node.args else None
        shown = f"{name}({first!r})" if first is not None else f"{name}(<not a literal>)"
        if first is None:
            found.append((node.lineno, shown))
            continue
        target = first.split(".")[0]
        if target in LAYERS and target != app:
            found.append((node.lineno, shown))
    return found


@pytest.mark.parametrize("app", LAYERS)
def test_no_app_looks_up_another_apps_model_or_module_by_name(app):
    found = []
    for path in _sources(app):
        relative = str(path.relative_to(ROOT))
        for line, call in lookups_by_name(path.read_text(), app):
            if (relative, call) not in KNOWN:
                found.append(f"{relative}:{line}: {call}")
    assert not found, "look-ups by name across apps (register a hook instead):\n" + "\n".join(found)


def test_the_lookup_check_finds_each_kind():
    source = textwrap.dedent(
        """
        from django.apps import apps
        from importlib import import_module

        def f(name):
            apps.get_model("approvals", "Decision")
            apps.get_model("approvals.RegistrationRequest")
            import_module("approvals.services")
            import_module(name)
            apps.get_model("inventory", "Client")  # its own app: fine
            apps.get_models()  # every model, generically: fine
        """
    )
    assert [call for _line, call in lookups_by_name(source, "inventory")] == [
        "get_model('approvals')",
        "get_model('approvals.RegistrationRequest')",
        "import_module('approvals.services')",
        "import_module(<not a literal>)",
    ]


# --- tables of a higher layer named in strings ------------------------------------------------------------


def _higher_tables(app: str) -> re.Pattern:
    higher = LAYERS[LAYERS.index(app) + 1 :]
    tables = sorted(model._meta.db_table for label in higher for model in apps.get_app_config(label).get_models())
    return re.compile(r"\b(" + "|".join(map(re.escape, tables)) + r")\b")


def tables_named(source: str, pattern: re.Pattern) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(source)):
        text = _literal(node) if isinstance(node, ast.Constant) else None
        if text and (match := pattern.search(text)):
            found.append((node.lineno, match.group(1)))
    return found


@pytest.mark.parametrize("app", LAYERS[:-1])
def test_no_lower_layer_names_a_higher_layers_table(app):
    pattern = _higher_tables(app)
    found = [
        f"{path.relative_to(ROOT)}:{line}: {table}"
        for path in _sources(app)
        for line, table in tables_named(path.read_text(), pattern)
    ]
    assert not found, "a lower layer reads or writes a higher layer's table by name:\n" + "\n".join(found)


def test_the_table_check_finds_a_table_in_sql():
    pattern = _higher_tables("inventory")
    source = 'SQL = "UPDATE approvals_registrationrequest SET state = %s"\nFIELD = "approvals_needed"\n'
    assert tables_named(source, pattern) == [(1, "approvals_registrationrequest")]
