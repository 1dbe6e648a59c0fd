"""The seams, read from the source: imports point down (api -> projections -> ledger), the
benchmarks never import the tests, and no module uses another module's private names.

Every import counts, those inside functions too (the CLI imports lazily). Each rule is
shown failing on a small example first, so a rule that stopped matching anything would
be caught as well as a file that breaks it."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# The package's rooms, lowest first: a room may import the ones below it, never above.
LAYERS = ("ledger", "projections", "api")
PROJECT = (*LAYERS, "benchmarks", "tests")


@dataclass(frozen=True)
class Import:
    """``module`` (the importing file's dotted name) takes ``names`` from ``target``
    (none for a plain ``import target``)."""

    module: str
    target: str
    names: tuple[str, ...]
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imports_of(source: str, module: str, is_package: bool = False) -> list[Import]:
    found: list[Import] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, a.name, (), node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node, is_package)
            found.append(Import(module, target, tuple(a.name for a in node.names),
                                node.lineno))
    return found


def _room(dotted: str) -> str:
    return dotted.split(".", 1)[0]


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def upward(imp: Import) -> bool:
    """A room importing one above it (ledger -> projections or api; projections -> api)."""
    mine, theirs = _room(imp.module), _room(imp.target)
    return (mine in LAYERS and theirs in LAYERS
            and LAYERS.index(theirs) > LAYERS.index(mine))


def into_tests(imp: Import) -> bool:
    """The benchmarks (and the package) run without the tests: they never import them."""
    return _room(imp.module) != "tests" and _room(imp.target) == "tests"


def private_imports(imp: Import) -> list[str]:
    """Private names taken from another of the project's modules."""
    if _room(imp.target) not in PROJECT or imp.target == imp.module:
        return []
    return [name for name in imp.names if _private(name)]


def private_attributes(source: str, module: str, is_package: bool = False) -> list[str]:
    """``x._name`` where ``x`` is a name imported from another of the project's modules
    (a module, a class or a function of it)."""
    imported: dict[str, str] = {}
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    imported[alias.asname] = alias.name
                else:
                    imported[alias.name.split(".", 1)[0]] = alias.name.split(".", 1)[0]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node, is_package)
            for alias in node.names:
                imported[alias.asname or alias.name] = f"{target}.{alias.name}"
    uses = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in imported):
            origin = imported[node.value.id]
            if _room(origin) in PROJECT and not origin.startswith(f"{module}."):
                uses.append((node.lineno, f"{module}:{node.lineno} uses {origin}.{node.attr}"))
    return [use for _, use in sorted(uses)]


def _sources() -> list[tuple[Path, str, str, bool]]:
    out = []
    for room in PROJECT:
        for path in sorted((ROOT / room).rglob("*.py")):
            out.append((path, path.read_text(encoding="utf-8"), module_name(path),
                        path.name == "__init__.py"))
    return out


SOURCES = _sources()


def _every_import() -> list[Import]:
    return [imp for _, text, module, package in SOURCES
            for imp in imports_of(text, module, package)]


# -- the rules, each shown catching an example ------------------------------------------


@pytest.mark.parametrize(("source", "module", "up"), [
    ("from api.logs import configure", "ledger.writer", True),
    ("import projections.view", "ledger.writer", True),
    ("from api import errors", "projections.runner", True),
    ("from .. import api_thing", "ledger.store.base", False),  # ledger itself
    ("from ledger.chain import Head", "projections.view", False),
    ("from projections.queries import AuditQueries", "api.app", False),
    ("import os", "ledger.writer", False),
])
def test_an_upward_import_is_recognised(source: str, module: str, up: bool) -> None:
    assert [upward(i) for i in imports_of(source, module)] == [up]


def test_a_lazy_import_inside_a_function_counts() -> None:
    source = "def f():\n    from api.cli import app\n    return app\n"
    assert [upward(i) for i in imports_of(source, "projections.runner")] == [True]


def test_relative_imports_resolve_to_their_room() -> None:
    (imp,) = imports_of("from ..queries import AuditQueries", "projections.monitoring.rules")
    assert imp.target == "projections.queries"
    (imp,) = imports_of("from . import rules", "projections.monitoring", is_package=True)
    assert imp.target == "projections.monitoring"


def test_an_import_of_the_tests_from_outside_them_is_recognised() -> None:
    (imp,) = imports_of("from tests.support import ServerProcess", "benchmarks.ingest")
    assert into_tests(imp)
    (imp,) = imports_of("from tests.support import ServerProcess", "tests.test_keys")
    assert not into_tests(imp)


def test_a_private_name_from_another_module_is_recognised() -> None:
    (imp,) = imports_of("from api.cli import _fail as fail, app", "api.cli.transparency")
    assert private_imports(imp) == ["_fail"]
    (imp,) = imports_of("from os.path import _joinrealpath", "api.cli.transparency")
    assert private_imports(imp) == []  # not the project's
    (imp,) = imports_of("from __future__ import annotations", "api.cli.transparency")
    assert private_imports(imp) == []
    source = ("import ledger.verifier as v\nfrom api import cli\nfrom ledger.store import S\n"
              "v._walk(1)\ncli._settings()\nS._lock\nv.__name__\nself._x\n")
    assert private_attributes(source, "tests.test_x") == [
        "tests.test_x:4 uses ledger.verifier._walk",
        "tests.test_x:5 uses api.cli._settings",
        "tests.test_x:6 uses ledger.store.S._lock",
    ]


# -- the code as it is ------------------------------------------------------------------


def test_the_scan_sees_the_whole_code() -> None:
    rooms = {_room(module) for _, _, module, _ in SOURCES}
    assert rooms == set(PROJECT)
    assert len(_every_import()) > 500


def test_imports_point_down() -> None:
    found = [f"{i.module}:{i.line} imports {i.target}" for i in _every_import() if upward(i)]
    assert found == []


def test_nothing_outside_the_tests_imports_them() -> None:
    found = [f"{i.module}:{i.line} imports {i.target}" for i in _every_import()
             if into_tests(i)]
    assert found == []


def test_no_module_takes_another_modules_private_names() -> None:
    found = [f"{i.module}:{i.line} takes {name} from {i.target}"
             for i in _every_import() for name in private_imports(i)]
    found += [use for _, text, module, package in SOURCES
              for use in private_attributes(text, module, package)]
    assert found == []
