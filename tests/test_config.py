import tomllib
from pathlib import Path

import pytest

from nes2net_stream.config import env_overrides, load_settings
from nes2net_stream.errors import ConfigError
from nes2net_stream.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def test_repository_config_equals_builtin_defaults():
    with (REPO / "config.toml").open("rb") as fh:
        data = tomllib.load(fh)
    gateways = data.pop("gateways", {})
    assert Settings.model_validate(data).model_dump() == Settings().model_dump()
    # the example gateway tables are valid for their plugins, and disabled by default
    from nes2net_stream.gateways.registry import discover

    plugins = discover()
    for name, table in gateways.items():
        assert name in plugins, f"config.toml has [gateways.{name}] but no such plugin"
        cfg = plugins[name].Config.model_validate(table)
        assert cfg.enabled is False


def test_precedence_cli_over_env_over_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[windows]\nwindow_s = 3.0\nhop_s = 0.5\n[model]\npath = "file-model"\n')
    env = {"NES2NET_WINDOWS__HOP_S": "0.75", "NES2NET_MODEL__PATH": "env-model"}
    s = load_settings(cfg, environ=env, overrides={"model": {"path": "cli-model"}})
    assert s.windows.window_s == 3.0      # file
    assert s.windows.hop_s == 0.75        # env beats file
    assert s.model.path == "cli-model"    # cli beats env
    assert s.source == str(cfg)


def test_env_values_are_typed():
    assert env_overrides({"NES2NET_VAD__ENABLED": "false", "NES2NET_VAD__AGGRESSIVENESS": "3",
                          "OTHER": "x"}) == {"vad": {"enabled": False, "aggressiveness": 3}}


@pytest.mark.parametrize("text,key", [
    ("[vad]\naggressiveness = 7\n", "vad.aggressiveness"),
    ("[windows]\nwindow_s = 'long'\n", "windows.window_s"),
    ("[model]\npaht = 'x'\n", "model.paht: unknown key"),
    ("[nonsense]\na = 1\n", "nonsense: unknown key"),
    ("[vad\n", "invalid TOML"),
])
def test_invalid_config_names_the_key(tmp_path, text, key):
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=key):
        load_settings(cfg, environ={})


def test_invalid_env_names_the_key():
    with pytest.raises(ConfigError, match="vad.frame_ms"):
        load_settings(None, environ={"NES2NET_VAD__FRAME_MS": "25"})


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.toml")
