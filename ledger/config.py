"""Where the service's database and key ring are: one answer whatever the current directory.

The command line and the service look in this order, and the first that names a setting
wins (docs/operations.md, "Configuration"):

1. the environment: ``LEDGER_DATABASE_URL``, ``LEDGER_KEY_FILE``, ``LEDGER_LOG_KEY_FILE``
   (and every other ``LEDGER_*`` variable);
2. the file named by ``LEDGER_CONFIG``, else the first ``phi-ledger.toml`` found in the
   current directory or one of its parents (as git finds its repository);
3. the defaults, ``./var/ledger.db`` and ``./var/keys.json`` under the current directory
   (and the log key file beside the key file, ``./var/log-keys.json``).

In a ``phi-ledger.toml`` the keys are the variables' names without ``LEDGER_`` and in lower
case (``database_url``, ``key_file``, ``log_key_file``, ``log_format``, ...); a relative
``sqlite:///`` path, key file or log key file is taken relative to the file's own
directory, so the answer does not depend on where the command runs. Every path is made
absolute here, so the service's worker processes and the projector's helpers, which inherit
the environment, agree with it.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_NAME = "phi-ledger.toml"
SQLITE_PREFIX = "sqlite:///"


class ConfigError(Exception):
    """A configuration file that cannot be read; the message names the file, not secrets."""


@dataclass(frozen=True)
class Found:
    """The settings discovered, as environment variables, and where each came from.

    ``values`` holds only ``LEDGER_*`` names; ``source`` says, for the database, which of
    ``environment``, the config file's path or ``default`` decided it; ``looked`` lists the
    places searched for a config file, in order (for an error that says where it looked)."""

    values: dict[str, str]
    source: str
    config_file: Path | None
    looked: tuple[str, ...] = field(default=())

    @property
    def database_url(self) -> str:
        return self.values["LEDGER_DATABASE_URL"]

    @property
    def sqlite_path(self) -> Path | None:
        url = self.database_url
        return Path(url.removeprefix(SQLITE_PREFIX)) if url.startswith(SQLITE_PREFIX) else None


def _absolute_url(url: str, base: Path) -> str:
    if url.startswith(SQLITE_PREFIX):
        path = Path(url.removeprefix(SQLITE_PREFIX))
        if path.as_posix() != ":memory:" and not path.is_absolute():
            return SQLITE_PREFIX + str((base / path).resolve())
    return url


def _absolute_path(value: str, base: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def find_config(environ: Mapping[str, str], cwd: Path,
                is_file: Callable[[Path], bool] = Path.is_file) -> tuple[Path | None, list[str]]:
    """The config file to read, and every place looked at before finding it."""
    named = environ.get("LEDGER_CONFIG")
    if named:
        path = Path(named).expanduser()
        path = path if path.is_absolute() else cwd / path
        if not is_file(path):
            raise ConfigError(f"LEDGER_CONFIG names {path}, which is not a file")
        return path, [f"LEDGER_CONFIG={path}"]
    looked: list[str] = []
    for folder in (cwd, *cwd.parents):
        candidate = folder / CONFIG_NAME
        looked.append(str(candidate))
        if is_file(candidate):
            return candidate, looked
    return None, looked


def read_config(path: Path) -> dict[str, str]:
    """The file's settings as ``LEDGER_*`` variables (strings, as the environment has)."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read {path}: {type(error).__name__}") from None
    values: dict[str, str] = {}
    for key, value in raw.items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        if not isinstance(value, str | int):
            raise ConfigError(f"{path}: '{key}' must be a string or a number")
        values["LEDGER_" + key.upper()] = str(value)
    base = path.parent
    if "LEDGER_DATABASE_URL" in values:
        values["LEDGER_DATABASE_URL"] = _absolute_url(values["LEDGER_DATABASE_URL"], base)
    for name in ("LEDGER_KEY_FILE", "LEDGER_LOG_KEY_FILE"):
        if name in values:
            values[name] = _absolute_path(values[name], base)
    return values


def discover(environ: Mapping[str, str], cwd: Path,
             is_file: Callable[[Path], bool] = Path.is_file) -> Found:
    """Resolve the database and key ring (and any other ``LEDGER_*`` setting a config
    file holds) in the documented order; the environment always wins."""
    from ledger.settings import DEFAULT_DATABASE_URL, DEFAULT_KEY_FILE

    config, looked = find_config(environ, cwd, is_file)
    from_file = read_config(config) if config is not None else {}
    values = {k: v for k, v in from_file.items() if not environ.get(k)}
    if environ.get("LEDGER_DATABASE_URL"):
        source = "environment (LEDGER_DATABASE_URL)"
        values["LEDGER_DATABASE_URL"] = _absolute_url(environ["LEDGER_DATABASE_URL"], cwd)
    elif "LEDGER_DATABASE_URL" in from_file:
        source = str(config)
    else:
        source = "default"
        values["LEDGER_DATABASE_URL"] = _absolute_url(DEFAULT_DATABASE_URL, cwd)
    if environ.get("LEDGER_KEY_FILE"):
        values["LEDGER_KEY_FILE"] = _absolute_path(environ["LEDGER_KEY_FILE"], cwd)
    elif "LEDGER_KEY_FILE" not in values:
        values["LEDGER_KEY_FILE"] = _absolute_path(DEFAULT_KEY_FILE, cwd)
    # No default here: the log key file's default is beside the key file (Settings), which
    # is absolute by now.
    if environ.get("LEDGER_LOG_KEY_FILE"):
        values["LEDGER_LOG_KEY_FILE"] = _absolute_path(environ["LEDGER_LOG_KEY_FILE"], cwd)
    return Found(values=values, source=source, config_file=config, looked=tuple(looked))


def missing_ledger(found: Found, exists: Callable[[Path], bool] = Path.exists) -> str | None:
    """Why a command that needs an existing ledger must not run, or None.

    Only the default can be wrong silently: a database named by the environment or a
    config file is the operator's choice (it may be new on purpose). A default SQLite file
    that does not exist means the command runs somewhere other than the service does."""
    path = found.sqlite_path
    if found.source != "default" or path is None or exists(path):
        return None
    looked = ", ".join(found.looked[:3]) + (", ..." if len(found.looked) > 3 else "")
    return (f"no ledger database at {path} (the default under the current directory). "
            f"Looked for LEDGER_DATABASE_URL, LEDGER_CONFIG and {CONFIG_NAME} in {looked}. "
            f"Run this where the service runs, or set LEDGER_CONFIG=/path/to/{CONFIG_NAME} "
            "or LEDGER_DATABASE_URL and LEDGER_KEY_FILE (see docs/operations.md)")
