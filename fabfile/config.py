"""The operator's configuration: settings.DEFAULTS, then (for `inv`) what Invoke's own
configuration files hold under `slony`, then a configuration file, then the
environment, each setting checked (its name and its type) before anything runs.

A file (--config FILE, TOML) holds keys of settings.DEFAULTS["slony"] at its top level
or under [slony]; the environment SLONY_MIGRATE_<KEY> (or INVOKE_SLONY_<KEY>, as
Invoke names them). A flag on the command line wins over all of them. Bad input is a
StepError on host "config": one line naming the key and where it came from, exit code
2.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import StepError
from .settings import DEFAULTS

KEYS = DEFAULTS["slony"]
PREFIXES = ("SLONY_MIGRATE_", "INVOKE_SLONY_")
NOT_SETTINGS = {"SLONY_MIGRATE_PASSWORD", "SLONY_MIGRATE_HOME"}


def typed(key: str, value, where: str):
    """`value` as the type of the key's default (text from the environment included);
    StepError naming key and source when it is not."""
    want = type(KEYS[key])
    if isinstance(value, want) and not (want is int and isinstance(value, bool)):
        return value
    if isinstance(value, str):
        text = value.strip()
        if want is bool and text.lower() in (
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
            "",
        ):
            return text.lower() in ("1", "true", "yes", "on")
        if want is int:
            try:
                return int(text)
            except ValueError:
                pass
    kind = {str: "text", int: "a whole number", bool: "true or false"}[want]
    raise StepError(
        "config",
        f"{where}: {key} = {value!r} is not {kind}",
        f"give {key} as {kind} (default {KEYS[key]!r})",
    )


def from_file(path: str) -> dict:
    """The settings a TOML file holds; StepError when it is missing, unreadable, or
    holds a key or a value the tool does not know."""
    try:
        import tomllib  # Python 3.11 and newer
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    p = Path(path).expanduser()
    if not p.is_file():
        raise StepError(
            "config", f"--config {path}: no such file", "give an existing file"
        )
    try:
        data = tomllib.loads(p.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise StepError("config", f"{path}: {e}", "correct the file (TOML)") from None
    if "slony" in data and len(data) > 1:
        others = sorted(k for k in data if k != "slony")
        raise StepError(
            "config",
            f"{path}: {', '.join(others)} outside [slony]",
            "put every setting under [slony], or none (all at the top level)",
        )
    return from_mapping(data.get("slony", data), str(path))


def from_mapping(section, where: str) -> dict:
    """The settings a mapping holds; StepError for an unknown key or a bad value."""
    if not isinstance(section, dict):
        raise StepError("config", f"{where}: [slony] is not a table", "correct it")
    out = {}
    for key, value in section.items():
        if key not in KEYS:
            raise StepError(
                "config",
                f"{where}: unknown key {key!r}",
                "use one of " + ", ".join(sorted(KEYS)),
            )
        out[key] = typed(key, value, where)
    return out


def from_environment(environ: dict[str, str] | None = None) -> dict:
    """The settings the environment holds (SLONY_MIGRATE_<KEY>, INVOKE_SLONY_<KEY>);
    StepError for a variable with a prefix and an unknown key, or a bad value."""
    environ = os.environ if environ is None else environ
    out = {}
    for name, value in sorted(environ.items()):
        prefix = next((p for p in PREFIXES if name.startswith(p)), None)
        if prefix is None or name in NOT_SETTINGS:
            continue
        key = name[len(prefix) :].lower()
        if key not in KEYS:
            raise StepError(
                "config",
                f"environment: {name} is not a setting",
                "use one of " + ", ".join(prefix + k.upper() for k in sorted(KEYS)),
            )
        out[key] = typed(key, value, f"environment {name}")
    return out


def load(
    path: str = "", environ: dict[str, str] | None = None, configured=None
) -> dict:
    """DEFAULTS, then `configured` (the `slony` section of Invoke's configuration),
    then the file (when given), then the environment."""
    conf = dict(KEYS)
    if configured:
        conf.update(from_mapping(dict(configured), "Invoke's configuration (slony)"))
    if path:
        conf.update(from_file(path))
    conf.update(from_environment(environ))
    return conf
