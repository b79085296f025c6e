"""The apps depend one way, read from the source (``ast``), tests and migrations included
only where they are code the apps run (tests are not):

- between the domain apps, only payments imports orders; a consumer app (orders, points,
  notifications) imports ``payments.events``, the published language, from its
  ``consumers.py`` and nowhere else;
- no domain app imports harness;
- txbroker, a reusable app, imports none of the project's packages, and its own tests (run
  on their own test project, ``make test-txbroker``) import none either.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = ("payments", "orders", "points", "notifications")
PROJECT = (*DOMAIN, "harness", "config")
CONSUMER_APPS = ("orders", "points", "notifications")


def modules(package: str, *, tests: bool = False) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT)
        if "tests" in relative.parts and not tests:
            continue
        yield ".".join(relative.with_suffix("").parts).removesuffix(".__init__"), path


def imported(module: str, path: Path) -> Iterator[str]:
    """Every module ``path`` imports, at the top or inside a function, relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            yield name
            # ``from payments import services`` imports payments.services.
            yield from (f"{name}.{alias.name}" for alias in node.names)


def top(name: str) -> str:
    return name.partition(".")[0]


def allowed(module: str, target: str) -> bool:
    """Whether ``module`` (of a domain app) may import ``target`` (of another project app)."""
    app, target_app = top(module), top(target)
    if target_app == "config":
        return True
    if app == "payments" and target_app == "orders":
        return True
    published = target in ("payments", "payments.events") or target.startswith("payments.events.")
    return app in CONSUMER_APPS and module == f"{app}.consumers" and published


@pytest.mark.parametrize("app", DOMAIN)
def test_domain_apps_depend_one_way(app):
    wrong = sorted(
        f"{module} imports {target}"
        for module, path in modules(app)
        for target in imported(module, path)
        if top(target) in PROJECT and top(target) != app and not allowed(module, target)
    )
    assert wrong == []


def test_txbroker_and_its_tests_import_none_of_the_projects_packages():
    wrong = sorted(
        f"{module} imports {target}"
        for module, path in modules("txbroker", tests=True)
        for target in imported(module, path)
        if top(target) in PROJECT
    )
    assert wrong == []


def test_the_check_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "services.py"
    source.write_text("def f():\n    from payments.selectors import x\n    from . import models\n")
    assert set(imported("orders.services", source)) >= {"payments.selectors", "orders.models"}
    assert not allowed("orders.services", "payments.selectors")
    assert allowed("orders.consumers", "payments.events")
    assert not allowed("points.services", "payments.events")
