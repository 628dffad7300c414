"""The gateway plugin API: the documented example plugin, installed as a third-party package
(entry point included), runs calls through the service; registry errors name the key."""

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest
from gwsupport import alerts, chunks, handshake_status, pcm16, play, speech, summaries, ws_url

from nes2net_stream.errors import ConfigError
from nes2net_stream.gateways.registry import discover

DOC = Path(__file__).resolve().parents[2] / "docs" / "gateways" / "plugin-api.md"
KEY = "acme-api-key-0123456789abcdef"


def example_source() -> str:
    text = DOC.read_text(encoding="utf-8")
    match = re.search(r"<!-- plugin-example: acme_gateway.py -->\n```python\n(.*?)```", text,
                      re.DOTALL)
    assert match, "plugin-api.md must contain the example plugin"
    return match.group(1)


def install(root: Path, name: str, module_source: str, entry: str) -> None:
    """A minimal installed distribution: the module plus a dist-info with its entry point."""
    (root / f"{name}.py").write_text(module_source, encoding="utf-8")
    info = root / f"{name}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[nes2net_stream.gateways]\n{entry}\n")


@pytest.fixture()
def acme_installed(tmp_path, monkeypatch):
    install(tmp_path, "acme_gateway", example_source(), "acme = acme_gateway:AcmeGateway")
    install(tmp_path, "broken_gateway", "raise ImportError('broken on purpose')\n",
            "broken = broken_gateway:Nothing")
    install(tmp_path, "notagateway", "class Thing:\n    pass\n", "thing = notagateway:Thing")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    for mod in ("acme_gateway", "broken_gateway", "notagateway"):
        sys.modules.pop(mod, None)


def test_discovery_loads_plugins_and_skips_broken_ones(acme_installed):
    found = discover()
    assert found["acme"].__name__ == "AcmeGateway"
    assert {"twilio", "freeswitch", "jambonz", "vonage", "telnyx", "plivo", "signalwire",
            "bandwidth"} <= set(found)
    assert "broken" not in found and "thing" not in found


async def test_example_plugin_serves_calls(acme_installed, make_service, redis_client):
    svc = await make_service(gateways={"acme": {"enabled": True, "api_key": KEY}})
    url = ws_url(svc, "/v1/gateways/acme")
    hello = json.dumps({"call": "acme-1", "rate": 16000, "from": "+15551230000"})
    audio = chunks(pcm16(speech(5.0, 16000, seed=1)), 640)
    _, code, _ = await play(url, [hello, *audio, "bye"], headers={"X-Api-Key": KEY})
    assert code == 1000
    (s,) = await summaries(redis_client, "acme-1")
    assert s["source"]["gateway"] == "acme" and s["channel"] == "caller"
    assert s["metadata"] == {"provider": "acme", "provider_call_id": "acme-1",
                             "ani": "+15551230000"}
    assert s["summary"]["end_reason"] == "stop" and s["summary"]["windows_scored"] >= 1
    assert await handshake_status(url, {"X-Api-Key": "wrong"}) == 401
    _, code, reason = await play(url, ["not json"], headers={"X-Api-Key": KEY})
    assert (code, reason) == (4400, "bad_message")
    _, code, reason = await play(url, [hello.replace("acme-1", "acme-2"), b"\x00" * 3],
                                 headers={"X-Api-Key": KEY})
    assert (code, reason) == (4400, "bad_message")
    (bad,) = await summaries(redis_client, "acme-2")
    assert bad["summary"]["end_reason"] == "error"
    await asyncio.sleep(0.1)
    assert {d["call_id"] for d in alerts(redis_client)} == {"acme-1", "acme-2"}


async def test_registry_errors_name_the_key(acme_installed, make_service):
    with pytest.raises(ConfigError, match="gateways.acme.colour: unknown key"):
        await make_service(gateways={"acme": {"enabled": True, "colour": "red"}})
    with pytest.raises(ConfigError, match="gateways.nope: no installed gateway plugin"):
        await make_service(gateways={"nope": {"enabled": True}})
    with pytest.raises(ConfigError, match="gateways.acme.api_key"):
        await make_service(gateways={"acme": {"enabled": True, "auth": "required"}})
    svc = await make_service(gateways={"nope": {"enabled": False}})
    assert svc.gateways == []
