"""Discovering gateway plugins through the ``nes2net_stream.gateways`` entry-point group."""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from pydantic import ValidationError

from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.api import Gateway
from nes2net_stream.logs import get_logger
from nes2net_stream.service.auth import is_loopback

GROUP = "nes2net_stream.gateways"
log = get_logger("nes2net.gateways")


def discover() -> dict[str, type[Gateway]]:
    """All installed gateway plugin classes by name (import failures are logged, skipped)."""
    found: dict[str, type[Gateway]] = {}
    for ep in entry_points(group=GROUP):
        try:
            cls = ep.load()
        except Exception as exc:  # a broken third-party plugin must not stop the service
            log.error("gateway plugin failed to import", plugin=ep.name, error=repr(exc))
            continue
        if not (isinstance(cls, type) and issubclass(cls, Gateway)):
            log.error("entry point is not a Gateway subclass", plugin=ep.name)
            continue
        found[ep.name] = cls
    return found


def _format(name: str, exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"gateways.{name}.{key}: {msg}")
    return "; ".join(parts)


def load_gateways(sections: dict[str, dict[str, Any]], ctx: Any, server_host: str,
                  available: dict[str, type[Gateway]] | None = None) -> list[Gateway]:
    """Instantiate the gateways enabled in ``[gateways.<name>]``, validating their settings."""
    if not sections:
        return []
    available = discover() if available is None else available
    gateways: list[Gateway] = []
    for name, raw in sections.items():
        if not isinstance(raw, dict):
            raise ConfigError(f"gateways.{name}: expected a table")
        cls = available.get(name)
        if cls is None:
            if raw.get("enabled", False):
                raise ConfigError(f"gateways.{name}: no installed gateway plugin of that name "
                                  f"(installed: {sorted(available) or 'none'})")
            continue
        try:
            cfg = cls.Config.model_validate(raw)
        except ValidationError as exc:
            raise ConfigError(_format(name, exc)) from exc
        if not cfg.enabled:
            continue
        bind = server_host if cls.transport == "websocket" else cfg.host
        required = cfg.auth == "required" or (cfg.auth == "auto" and not is_loopback(bind))
        gw = cls(cfg, ctx, auth_required=required)
        gw.check_config()
        if cls.transport == "websocket" and not cfg.path:
            raise ConfigError(f"gateways.{name}.path: a WebSocket path is required")
        gateways.append(gw)
    return gateways
