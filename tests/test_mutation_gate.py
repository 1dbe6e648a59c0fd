"""The mutation gate's decision (scripts/mutation --check), on plain data.

mutmut's outcome of each mutant is its exit code (``mutants/<file>.meta``); the gate reads
those and the names listed in scripts/mutation-equivalent.txt, nothing else, so each rule
is shown here on made-up outcomes.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from types import ModuleType

import pytest
from mutmut.stats import status_by_exit_code

from tests.support import ROOT

KILLED, SURVIVED, NO_TESTS, TIMEOUT, NOT_CHECKED = 1, 0, 33, 36, None
PATH = "ledger/chain.py"


def _load() -> ModuleType:
    # scripts/mutation is a script, not a module of a package: load it from its file
    loader = importlib.machinery.SourceFileLoader("mutation_script",
                                                  str(ROOT / "scripts" / "mutation"))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[loader.name] = module  # dataclasses look their module up while built
    loader.exec_module(module)
    return module


mutation = _load()


def outcomes(*codes: int | None) -> dict[str, int | None]:
    """mutmut's keys: the module, then the mangled function name and a number."""
    return {f"ledger.chain.x_extend__mutmut_{n}": code for n, code in enumerate(codes, 1)}


def test_a_file_passes_at_95_percent_killed_and_fails_below() -> None:
    threshold = mutation.THRESHOLD
    assert threshold == 95
    at = mutation.judge(PATH, outcomes(*[KILLED] * threshold, *[SURVIVED] * (100 - threshold)),
                        [])
    below = mutation.judge(PATH, outcomes(*[KILLED] * (threshold - 1),
                                          *[SURVIVED] * (101 - threshold)), [])
    assert (at.killed, at.non_equivalent, at.passed) == (95, 100, True)
    assert (below.killed, below.non_equivalent, below.passed) == (94, 100, False)
    # 94.97% is below: no rounding up to the threshold
    close = mutation.judge(PATH, outcomes(*[KILLED] * 1898, *[SURVIVED] * 101), [])
    assert 100 * close.killed / close.non_equivalent > 94.9
    assert not close.passed


def test_listed_equivalents_leave_the_count_and_only_they_do() -> None:
    # 94 killed, 6 survived: 94% of all; two listed as equivalent: 94/98 = 95.9%
    results = outcomes(*[KILLED] * 94, *[SURVIVED] * 6)
    survived = [name for name, code in results.items() if code == SURVIVED]
    # listed as mutmut prints them (module first) or without the module: the same mutant
    listed = [survived[0], survived[1].removeprefix("ledger.chain.")]
    gate = mutation.judge(PATH, results, listed)
    assert gate.equivalent == tuple(sorted(name.removeprefix("ledger.chain.")
                                           for name in survived[:2]))
    assert (gate.total, gate.non_equivalent, gate.passed) == (100, 98, True)
    assert not mutation.judge(PATH, results, []).passed
    # the unlisted survivors are named, the listed ones are not
    assert [name for name, _ in gate.survivors] == sorted(
        name.removeprefix("ledger.chain.") for name in survived[2:])
    report = "\n".join(gate.report())
    assert all(name.removeprefix("ledger.chain.") in report for name in survived[2:])
    assert "98 non-equivalent" in report and ": ok" in report


def test_a_timeout_is_killed_and_a_mutant_without_tests_survives() -> None:
    timeouts = [code for code, word in status_by_exit_code.items() if word == "timeout"]
    gate = mutation.judge(PATH, outcomes(*[KILLED] * 90, *timeouts, *[TIMEOUT] * 2,
                                         *[NO_TESTS] * 3), [])
    assert gate.killed == 90 + len(timeouts) + 2
    assert [why for _, why in gate.survivors] == ["no tests"] * 3
    assert not mutation.judge(PATH, outcomes(*[KILLED] * 90, *[NO_TESTS] * 10), []).passed


def test_a_mutant_not_checked_is_not_killed() -> None:
    # an interrupted run leaves outcomes unset: the gate cannot count them as kills
    gate = mutation.judge(PATH, outcomes(*[KILLED] * 5, NOT_CHECKED), [])
    assert gate.survivors == (("x_extend__mutmut_6", "not checked"),)
    assert not gate.passed


def test_no_mutants_is_a_failure_not_a_pass() -> None:
    # mutmut could not run the tests (stats failed): no outcomes at all
    gate = mutation.judge(PATH, {}, [])
    assert not gate.passed
    assert "no mutants ran" in gate.report()[0]


def test_listings_no_longer_matching_a_survivor_are_warned_about_and_not_subtracted() -> None:
    results = outcomes(KILLED, KILLED, SURVIVED)
    # renumbered after an edit: one name is gone, one now names a killed mutant
    gate = mutation.judge(PATH, results, ["x_extend__mutmut_9", "x_extend__mutmut_1"])
    assert gate.equivalent == ()
    assert gate.non_equivalent == 3
    assert gate.stale == (("x_extend__mutmut_1", "which the tests kill"),
                          ("x_extend__mutmut_9", "which is no longer a mutant of the file"))
    warnings = [line for line in gate.report() if "warning" in line]
    assert len(warnings) == 2
    assert all("re-check" in line for line in warnings)


def test_the_exit_codes_are_read_as_mutmut_reads_them() -> None:
    # the script keeps its own copy of mutmut's table (it runs outside the venv)
    assert dict(status_by_exit_code) == mutation.STATUS
    assert mutation.status(12345) == status_by_exit_code.copy()[12345] == "suspicious"


def test_the_equivalents_listing_is_read_strictly() -> None:
    text = ("# comment\n\n"
            "ledger/chain.py x_extend__mutmut_3  # equal times assign the same string\n"
            "ledger/chain.py ledger.chain.xǁChainCheckǁfeed__mutmut_10  # why\n"
            "api/auth/policy.py x__allow__mutmut_1\n")
    assert mutation.parse_equivalents(text) == {
        "ledger/chain.py": {"x_extend__mutmut_3", "xǁChainCheckǁfeed__mutmut_10"},
        "api/auth/policy.py": {"x__allow__mutmut_1"},
    }
    with pytest.raises(ValueError, match=r":2: expected"):
        mutation.parse_equivalents("\nledger/chain.py\n")
    with pytest.raises(ValueError, match="expected"):
        mutation.parse_equivalents("ledger/nowhere.py x_extend__mutmut_3\n")
    with pytest.raises(ValueError, match="not a mutant"):
        mutation.parse_equivalents("ledger/chain.py extend\n")


def test_a_file_is_due_when_it_its_tests_or_its_equivalents_changed() -> None:
    listed = {PATH: {"x_extend__mutmut_3"}}
    assert not mutation.due(PATH, {"README.md", "ledger/canonical.py"}, listed, listed)
    assert mutation.due(PATH, {PATH}, listed, listed)
    assert mutation.due(PATH, {mutation.TESTS[PATH][0]}, listed, listed)
    assert mutation.due(PATH, set(), listed, {})
    assert not mutation.due(PATH, set(), listed, {PATH: {"x_extend__mutmut_3"},
                                                  "ledger/event.py": {"x_f__mutmut_1"}})


def test_the_recorded_commits_name_only_listed_files() -> None:
    assert mutation.parse_bases("# c\nledger/chain.py 94ec3c5\n") == {"ledger/chain.py": "94ec3c5"}
    with pytest.raises(ValueError, match="expected"):
        mutation.parse_bases("ledger/chain.py\n")
