"""Fuzzing the configuration loader: TOML files, environment overrides and override dicts.

Property: any input either loads into valid Settings or raises ConfigError (naming the key for
invalid values), never another exception and never a hang.
"""

from __future__ import annotations

import json
import tomllib

import pytest
from fuzzing import FUZZ, call, corrupted, json_values, mutated
from hypothesis import example, given
from hypothesis import strategies as st

from nes2net_stream.config import env_overrides, load_settings
from nes2net_stream.errors import ConfigError
from nes2net_stream.settings import Settings

DEFAULTS = Settings().model_dump(mode="json")
SECTIONS = sorted(k for k, v in DEFAULTS.items() if isinstance(v, dict) and v)
KEYS = [(s, k) for s in SECTIONS for k in DEFAULTS[s]]


@pytest.fixture(scope="module")
def empty_toml(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "empty.toml"
    path.write_bytes(b"")
    return path


def load(path, **kwargs):
    try:
        return call(load_settings, path, **kwargs)
    except ConfigError as err:
        assert str(err)
        return err


@FUZZ
@given(st.data())
def test_mutated_override_dicts(empty_toml, data):
    section, key = data.draw(st.sampled_from(KEYS))
    doc = {section: {key: DEFAULTS[section][key]}}
    doc = data.draw(mutated(doc, max_mutations=2))
    out = load(empty_toml, environ={}, overrides=doc)
    if isinstance(out, ConfigError):
        # the message names the offending section (and key, unless the section itself is bad)
        assert any(str(name) in str(out) for name in doc) or "(root)" in str(out), str(out)
    else:
        assert isinstance(out, Settings)
        Settings.model_validate(out.model_dump())  # what loaded is valid as a whole


@FUZZ
@given(st.sampled_from(KEYS), json_values)
def test_any_value_for_any_key(empty_toml, where, value):
    section, key = where
    out = load(empty_toml, environ={}, overrides={section: {key: value}})
    if isinstance(out, ConfigError):
        assert f"{section}.{key}" in str(out), str(out)


env_names = st.one_of(
    st.sampled_from(KEYS).map(lambda sk: f"NES2NET_{sk[0].upper()}__{sk[1].upper()}"),
    st.from_regex(r"NES2NET_[A-Za-z_]{0,12}(__[A-Za-z_]{0,8}){0,3}", fullmatch=True),
    st.text(max_size=20))
env_values = st.one_of(json_values.map(json.dumps), st.text(max_size=20),
                       st.sampled_from(["1" * 5000, "[" * 3000, "true", "Infinity", "-0",
                                        '{"a": 1}', "0x10"]))


@FUZZ
@given(st.dictionaries(env_names, env_values, max_size=4))
@example({"NES2NET_SERVER__PORT": "1" * 5000})   # an integer beyond int()'s digit limit
@example({"NES2NET_SERVER__HOST": "[" * 3000})    # nesting beyond the recursion limit
@example({"NES2NET_A__B": "1", "NES2NET_A__B__C": "2"})
@example({"NES2NET___": "1"})
def test_environment_overrides(empty_toml, environ):
    try:
        call(env_overrides, environ)
    except ConfigError:
        pass
    out = load(empty_toml, environ=environ)
    assert isinstance(out, Settings | ConfigError)


VALID_TOML = b"""
[server]
port = 8080
host = "127.0.0.1"
[limits]
max_text_bytes = 16384
[vad]
aggressiveness = 2
[[webrtc.ice_servers]]
urls = ["stun:stun.example.test:3478"]
[gateways.twilio]
enabled = false
"""


@FUZZ
@given(st.one_of(corrupted(VALID_TOML, max_edits=6), st.binary(max_size=200),
                 st.text(max_size=200).map(str.encode)))
@example(b"a = " + b"[" * 3000)                   # deep nesting
@example(b"[server]\nhost = \"\xff\xfe\"\n")      # not UTF-8
@example(b"[server]\nport = " + b"9" * 5000 + b"\n")
def test_toml_files(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("toml", numbered=True) / "config.toml"
    path.write_bytes(data)
    out = load(path, environ={})
    if isinstance(out, Settings):
        assert out.source == str(path)
        tomllib.loads(data.decode())  # only well-formed TOML loads


def test_valid_toml_loads(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(VALID_TOML)
    settings = load_settings(path, environ={})
    assert settings.server.port == 8080 and settings.webrtc.ice_servers[0].urls
