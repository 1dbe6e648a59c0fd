"""docs/compliance.md maps each obligation to tests by name: every name it gives must be a
test that exists, and every obligation the map promises must have a section with tests."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.support import ROOT

MAP = ROOT / "docs" / "compliance.md"
REFERENCE = re.compile(r"`(tests/test_\w+\.py)::(test_\w+)`")
OBLIGATIONS = ["164.312(b)", "164.312(c)(1)", "164.312(d)", "164.308(a)(1)(ii)(D)",
               "164.316(b)(2)", "164.528", "164.404-410",
               "170.315(d)(2)", "170.315(d)(3)", "170.315(d)(10)"]


def defined_tests(path: Path) -> set[str]:
    """The test functions a test file defines at its top level (collected by pytest)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.name.startswith("test_")}


def sections(text: str) -> dict[str, str]:
    """Each '### ' section of the map by its heading."""
    parts = re.split(r"^### ", text, flags=re.MULTILINE)[1:]
    return {part.splitlines()[0]: part for part in parts}


def test_every_test_the_map_names_exists() -> None:
    text = MAP.read_text(encoding="utf-8")
    references = REFERENCE.findall(text)
    assert len(references) >= 30
    missing = [f"{file}::{name}" for file, name in references
               if not (ROOT / file).is_file() or name not in defined_tests(ROOT / file)]
    assert not missing, f"docs/compliance.md names tests that do not exist: {missing}"


def test_every_obligation_has_a_section_with_tests_and_the_operators_part() -> None:
    found = sections(MAP.read_text(encoding="utf-8"))
    for obligation in OBLIGATIONS:
        heading = [h for h in found if h.startswith(obligation + " ")]
        assert heading, f"no section for {obligation}"
        body = found[heading[0]]
        assert "**Tests.**" in body and "**Left to the operator.**" in body, obligation
        assert REFERENCE.search(body), f"{obligation} names no test"


def test_the_checker_catches_a_wrong_name(tmp_path: Path) -> None:
    fake = tmp_path / "test_fake.py"
    fake.write_text("def test_real():\n    pass\n\ndef helper():\n    pass\n")
    assert defined_tests(fake) == {"test_real"}
