"""The documentation runs: every command and example request in README.md and docs/*.md.

The convention (also in docs/README.md, for everyone who writes a page):

* A fenced block tagged ```bash is run, with ``bash -euo pipefail``; one tagged ```python
  is run with the project's interpreter. Every other tag (```sh, ```console, ```text,
  ```json, ```sql, ```toml, ```mermaid, ...) is shown only. Add ``norun`` to the info
  string (```bash norun) for a command that cannot run in a test (a blocking server, the
  whole suite, a production host); ``exit=N`` when the block is meant to fail with N.
* The blocks of one file run in order, in one fresh directory, as if typed into one
  terminal: a variable a block sets (``KEY=$(...)``) is there for the blocks after it, and
  files it writes (``event.json``) too. That directory holds a link to the project's
  ``.venv``, so ``.venv/bin/phi-ledger`` works as it does in the checkout.
* Each file gets a fresh service, started by the test before its first block, on the
  embedded SQLite default (the newcomer's set-up; the behaviour behind every command is
  tested on both databases elsewhere). Blocks see ``LEDGER_DATABASE_URL`` and
  ``LEDGER_KEY_FILE`` pointing at that service's database and key ring, and
  ``PHI_LEDGER``, the service's base URL. Pages should spell requests
  ``"$PHI_LEDGER/v1/..."`` after ``PHI_LEDGER=${PHI_LEDGER:-http://127.0.0.1:8000}``, so
  a reader's copy goes to their own service and the test's to its own.
* A failure names the file and the line of the block's opening fence, with the block,
  its exit status and its output.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ROOT, ServerProcess

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_TAGS = {"bash", "python"}
BLOCK_TIMEOUT = 180

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it opens, its info string's words, its text (dedented)."""

    path: Path
    line: int
    tag: str
    options: tuple[str, ...]
    text: str

    @property
    def where(self) -> str:
        shown = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{shown}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.tag in RUN_TAGS and "norun" not in self.options

    @property
    def expected_exit(self) -> int:
        for option in self.options:
            if option.startswith("exit="):
                return int(option.removeprefix("exit="))
        return 0


def blocks(path: Path) -> Iterator[Block]:
    """Every fenced block of a Markdown file, in order."""
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        words = opening["info"].strip().split()
        body: list[str] = []
        j = i + 1
        while j < len(lines):
            closing = FENCE.match(lines[j])
            if (closing and closing["fence"][0] == fence[0]
                    and len(closing["fence"]) >= len(fence) and not closing["info"].strip()):
                break
            line = lines[j]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            j += 1
        yield Block(path, i + 1, words[0].lower() if words else "", tuple(words[1:]),
                    "\n".join(body) + "\n")
        i = j + 1


def test_the_block_reader_finds_tags_options_and_lines(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("intro\n\n```bash\necho one\n```\n\n- item\n\n  ```python norun\n"
                    "  print(1)\n  ```\n\n````text\n```bash\nnot a block\n```\n````\n"
                    "```bash exit=3\nexit 3\n```\n")
    found = list(blocks(page))
    assert [(b.line, b.tag, b.runs, b.expected_exit) for b in found] == [
        (3, "bash", True, 0), (9, "python", False, 0), (13, "text", False, 0),
        (18, "bash", True, 3)]
    assert found[1].text == "print(1)\n"
    assert "not a block" in found[2].text


def _report(block: Block, result: subprocess.CompletedProcess[str], why: str) -> str:
    return (f"{block.where}: {why}\n--- block ({block.tag}) ---\n{block.text}"
            f"--- exit {result.returncode}; stdout ---\n{result.stdout[-4000:]}"
            f"--- stderr ---\n{result.stderr[-4000:]}")


def run_block(block: Block, workdir: Path, state: Path) -> subprocess.CompletedProcess[str]:
    """Run one block in ``workdir`` with the variables earlier blocks left in ``state``;
    the variables it sets are written back for the next."""
    script = workdir / ".block"
    if block.tag == "python":
        (workdir / ".block.py").write_text(block.text)
        body = f'"{sys.executable}" .block.py'
    else:
        body = block.text
    # allexport (set -a): plain assignments (KEY=...) reach later blocks and programs.
    script.write_text(f"set -a\nsource {state}\nset -euo pipefail\ncd {workdir}\n{body}\n"
                      f"export -p > {state}\n")
    return subprocess.run(["bash", str(script)], cwd=workdir, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT, env={"PATH": _path(), "HOME": str(workdir)})


def _path() -> str:
    import os

    return os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])


def runnable(path: Path) -> list[Block]:
    return [b for b in blocks(path) if b.runs]


def run_page(path: Path, tmp_path: Path) -> None:
    """Run a page's runnable blocks against a fresh service; fail naming the block."""
    todo = runnable(path)
    if not todo:
        return
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / ".venv").symlink_to(ROOT / ".venv")
    env = {"LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/ledger.db",
           "LEDGER_KEY_FILE": str(tmp_path / "keys.json"),
           "LEDGER_LOG_FORMAT": "console", "LEDGER_LOG_LEVEL": "warning"}
    server = ServerProcess(env, log_path=tmp_path / "server.log", api_key="(none)")
    state = tmp_path / "state.sh"
    with server:
        state.write_text("".join(f"export {k}='{v}'\n" for k, v in {
            **env, "PHI_LEDGER": server.url, "LANG": "C.UTF-8"}.items()))
        for block in todo:
            try:
                result = run_block(block, workdir, state)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{block.where}: still running after {BLOCK_TIMEOUT} s")
            if result.returncode != block.expected_exit:
                pytest.fail(_report(block, result,
                                    f"exit {result.returncode}, expected {block.expected_exit}"))


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_in_the_page_runs(path: Path, tmp_path: Path) -> None:
    run_page(path, tmp_path)


def test_a_failing_block_is_named_by_file_and_line_and_later_blocks_see_variables(
        tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```bash\nWORD=kept\ncurl -sS \"$PHI_LEDGER/healthz\"\n```\n\n"
                    "```bash\ntest \"$WORD\" = kept || exit 7\necho on stderr >&2\nfalse\n```\n")
    with pytest.raises(pytest.fail.Exception) as failed:
        run_page(page, tmp_path)
    message = str(failed.value)
    assert message.startswith(f"{page}:6: exit 1, expected 0"), message
    assert "on stderr" in message and "false" in message


# -- the pages themselves ---------------------------------------------------------------

LINK = re.compile(r"\]\((?!https?://|mailto:|#)(?P<target>[^)#\s]+)(?:#[^)]*)?\)")


# Pages other engineers are writing, linked ahead from the README: a link to one of these
# may wait for it. Remove a name once its page has landed.
PENDING: set[str] = set()


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file_of_the_repository(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    targets = [(path.parent / m["target"]).resolve() for m in LINK.finditer(text)]
    broken = [str(t.relative_to(ROOT)) if t.is_relative_to(ROOT) else str(t)
              for t in targets if not t.exists()]
    broken = [b for b in broken if b not in PENDING]
    assert not broken, f"{path.relative_to(ROOT)}: links to missing files: {broken}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_page_tells_development_history(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    found = re.findall(r"\bsession \d+\b|\.\./shared/|NOTES\.md", text, flags=re.IGNORECASE)
    assert not found, f"{path.relative_to(ROOT)}: {sorted(set(found))}"


def test_the_readme_is_a_front_door_not_a_manual() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 320, f"README.md has {len(lines)} lines; move detail into docs/"
