"""The command line finds the service's database and key ring the same way whatever the
current directory (ledger/config.py), and refuses, naming where it looked, rather than
make a new empty ledger; ``shred`` asks before it destroys anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.config import ConfigError, discover, missing_ledger
from ledger.settings import Settings
from tests.test_tamper import cli_env, run_cli

TIMEOUT = 120


def bare_env() -> dict[str, str]:
    """An operator's shell with no LEDGER_* variable set."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}


def phi_ledger(cwd: Path, *args: str, env: dict[str, str] | None = None,
               stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "api.cli", *args], cwd=cwd,
                          env=bare_env() if env is None else env, input=stdin,
                          capture_output=True, text=True, timeout=TIMEOUT)


# -- discovery, as pure decisions ------------------------------------------------------


def test_the_environment_wins_over_a_config_file(tmp_path: Path) -> None:
    (tmp_path / "phi-ledger.toml").write_text('database_url = "sqlite:///from-file.db"\n')
    found = discover({"LEDGER_DATABASE_URL": "postgresql://db/x"}, tmp_path)
    assert found.database_url == "postgresql://db/x"
    assert found.source.startswith("environment")


def test_a_config_file_in_a_parent_is_found_and_read_relative_to_itself(tmp_path: Path) -> None:
    (tmp_path / "phi-ledger.toml").write_text(
        'database_url = "sqlite:///var/ledger.db"\nkey_file = "var/keys.json"\n'
        'log_format = "console"\n')
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    found = discover({}, deep)
    assert found.config_file == tmp_path / "phi-ledger.toml"
    assert found.sqlite_path == (tmp_path / "var" / "ledger.db").resolve()
    assert found.values["LEDGER_KEY_FILE"] == str((tmp_path / "var" / "keys.json").resolve())
    assert found.values["LEDGER_LOG_FORMAT"] == "console"
    assert Settings.from_env(found.values).database_url == found.database_url


def test_ledger_config_names_the_file_and_a_wrong_name_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text('database_url = "sqlite:///x.db"\n')
    found = discover({"LEDGER_CONFIG": str(config)}, tmp_path / "nowhere")
    assert found.sqlite_path == (tmp_path / "x.db").resolve()
    with pytest.raises(ConfigError, match="not a file"):
        discover({"LEDGER_CONFIG": str(tmp_path / "missing.toml")}, tmp_path)


def test_only_a_missing_default_database_is_refused(tmp_path: Path) -> None:
    default = discover({}, tmp_path)
    assert default.source == "default"
    problem = missing_ledger(default)
    assert problem is not None
    assert str(tmp_path / "var" / "ledger.db") in problem and "phi-ledger.toml" in problem
    assert missing_ledger(default, exists=lambda _: True) is None
    named = discover({"LEDGER_DATABASE_URL": f"sqlite:///{tmp_path}/new.db"}, tmp_path)
    assert missing_ledger(named) is None  # named on purpose: may be new


# -- the command line, as an operator runs it -----------------------------------------


def test_create_key_in_a_directory_without_a_ledger_refuses_and_creates_nothing(
        tmp_path: Path) -> None:
    result = phi_ledger(tmp_path, "admin", "create-key", "--role", "ingest")
    assert result.returncode == 2, result.stdout
    assert str(tmp_path / "var" / "ledger.db") in result.stderr
    assert "phi-ledger.toml" in result.stderr and "LEDGER_CONFIG" in result.stderr
    assert not (tmp_path / "var").exists()
    assert result.stdout == ""


def test_commands_from_any_subdirectory_use_the_config_files_ledger(tmp_path: Path) -> None:
    (tmp_path / "phi-ledger.toml").write_text(
        'database_url = "sqlite:///var/ledger.db"\nkey_file = "var/keys.json"\n')
    deep = tmp_path / "sub" / "deeper"
    deep.mkdir(parents=True)
    migrated = phi_ledger(tmp_path, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    made = phi_ledger(deep, "admin", "create-key", "--role", "ingest", "--name", "from-deep")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().splitlines()[-1].startswith("phk_")
    listed = phi_ledger(tmp_path, "admin", "list")
    assert listed.returncode == 0, listed.stderr
    assert "from-deep" in listed.stdout
    assert not (deep / "var").exists()


def test_shred_asks_first_and_a_no_changes_nothing(settings: Settings) -> None:
    assert run_cli(settings, "migrate").returncode == 0
    before = run_cli(settings, "export").stdout
    refused = subprocess.run(
        [sys.executable, "-m", "api.cli", "shred", "--patient", "MRN-0000001", "--reason", "R-1"],
        env=cli_env(settings), input="n\n", capture_output=True, text=True, timeout=TIMEOUT)
    assert refused.returncode == 1
    assert "nothing shredded" in refused.stderr
    assert "MRN-0000001" not in refused.stdout + refused.stderr
    assert run_cli(settings, "export").stdout == before
    done = run_cli(settings, "shred", "--patient", "MRN-0000001", "--reason", "R-1", "--yes")
    assert done.returncode == 0, done.stderr
    assert len(run_cli(settings, "export").stdout.splitlines()) == len(before.splitlines()) + 1
