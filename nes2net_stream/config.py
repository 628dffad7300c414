"""Configuration: ``config.toml`` defaults, overridden by environment variables and CLI flags.

Precedence (highest first): command-line flags, environment variables
``NES2NET_<SECTION>__<KEY>`` (e.g. ``NES2NET_REDIS__URL``), the TOML file, built-in defaults.
The file is the one given with ``--config``, else ``$NES2NET_CONFIG``, else ``./config.toml``
when present; the built-in defaults equal the repository's documented ``config.toml``.
Unknown keys and invalid values fail at start-up with the offending key named.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nes2net_stream.errors import ConfigError
from nes2net_stream.settings import Settings

ENV_PREFIX = "NES2NET_"
ENV_CONFIG_FILE = "NES2NET_CONFIG"


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _parse_env_value(text: str) -> Any:
    """Environment values are JSON when they parse as JSON (numbers, booleans, lists)."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # not JSON, huge integers, deep nesting
        return text


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Nested overrides from ``NES2NET_<SECTION>__<KEY>[__<SUBKEY>]`` variables."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name or name == ENV_CONFIG_FILE:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX):].split("__")]
        if any(not p for p in path):
            raise ConfigError(f"environment variable {name}: empty section or key")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"environment variable {name}: conflicts with another one")
        node[path[-1]] = _parse_env_value(value)
    return out


def find_config_file(explicit: str | Path | None = None) -> Path | None:
    """The configuration file to read, or None for built-in defaults."""
    if explicit is not None:
        p = Path(explicit)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        return p
    env = os.environ.get(ENV_CONFIG_FILE)
    if env:
        p = Path(env)
        if not p.is_file():
            raise ConfigError(f"{ENV_CONFIG_FILE}={env}: file not found")
        return p
    local = Path("config.toml")
    return local if local.is_file() else None


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file, turning syntax errors into ConfigError."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from exc
    except (ValueError, RecursionError) as exc:  # not UTF-8, huge integers, deep nesting
        raise ConfigError(f"{path}: invalid TOML ({type(exc).__name__}: "
                          f"{str(exc)[:120]})") from exc


def _format_error(exc: ValidationError, source: str) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        if err["type"] == "extra_forbidden":
            parts.append(f"{key}: unknown key")
        else:
            parts.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return f"invalid configuration ({source}): " + "; ".join(parts)


def load_settings(config_file: str | Path | None = None, *,
                  overrides: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Load settings with the documented precedence; raise ConfigError naming bad keys."""
    path = find_config_file(config_file)
    data: dict[str, Any] = read_toml(path) if path else {}
    data = _deep_merge(data, env_overrides(environ))
    if overrides:
        data = _deep_merge(data, overrides)
    source = str(path) if path else "built-in defaults"
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, source)) from exc
    settings.source = source
    return settings


def cli_overrides(**flags: Any) -> dict[str, Any]:
    """Turn ``section__key=value`` keyword flags into nested overrides, skipping ``None``."""
    out: dict[str, Any] = {}
    for name, value in flags.items():
        if value is None:
            continue
        section, _, key = name.partition("__")
        out.setdefault(section, {})[key] = value
    return out
