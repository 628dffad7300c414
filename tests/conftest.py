"""Shared fixtures."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))

from helpers import tone_bursts  # noqa: E402

from nes2net_stream.data.protocols import LA2019_PROTOCOLS, Trial, write_protocol  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"


def make_toy_corpus(root: Path, n_per_class: int = 12, seconds: float = 2.5) -> Path:
    """A tiny ASVspoof-layout corpus: 'bona fide' harmonic bursts vs 'spoof' buzzier bursts."""
    rng = np.random.default_rng(0)
    for split in LA2019_PROTOCOLS:
        audio = root / f"ASVspoof2019_LA_{split}" / "flac"
        audio.mkdir(parents=True, exist_ok=True)
        trials = []
        for i in range(n_per_class):
            for key in ("bonafide", "spoof"):
                x = tone_bursts(seconds, 16000, seed=int(rng.integers(1 << 30)))
                if key == "spoof":  # hard-clipped and band-limited: an easy, learnable cue
                    x = np.clip(x * 4, -0.3, 0.3) + 0.02 * rng.standard_normal(x.size)
                utt = f"TOY_{split[0].upper()}_{key[0]}{i:03d}"
                sf.write(audio / f"{utt}.flac", x.astype(np.float32), 16000)
                trials.append(Trial(speaker=f"S{i % 3}", utterance=utt,
                                    system="-" if key == "bonafide" else "A01", key=key))
        write_protocol(root / "ASVspoof2019_LA_cm_protocols" / LA2019_PROTOCOLS[split], trials)
    return root


@pytest.fixture(scope="session")
def toy_corpus(tmp_path_factory) -> Path:
    return make_toy_corpus(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    from servers import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture()
def redis_client(redis_server):
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def small_bundle(tmp_path_factory) -> Path:
    """An untrained but real spectral Nes2Net-X bundle (fast on CPU)."""
    import torch

    from nes2net_stream import save_model
    from nes2net_stream.models.config import BackendConfig, SpectralConfig
    from nes2net_stream.models.detector import Detector

    torch.manual_seed(0)
    det = Detector(SpectralConfig(n_features=32),
                   BackendConfig(input_dim=32, outer_ratio=4, inner_ratio=2, se_ratio=2),
                   model_id="test-small")
    return save_model(det.eval(), tmp_path_factory.mktemp("bundle") / "small")


@pytest_asyncio.fixture()
async def make_service(redis_server, redis_client, small_bundle):
    """Factory: start a Service in the test's event loop; drained when the test ends."""
    from nes2net_stream.config import load_settings
    from nes2net_stream.service.server import Service

    started = []

    async def factory(**overrides):
        base = {"model": {"path": str(small_bundle)}, "server": {"port": 0},
                "http": {"port": 0}, "redis": {"url": redis_server.url}}
        for section, values in overrides.items():
            base.setdefault(section, {}).update(values)
        settings = load_settings(None, environ={}, overrides=base)
        svc = Service(settings)
        await svc.start()
        started.append(svc)
        svc.url = f"ws://127.0.0.1:{svc.port}/v1/stream"
        return svc

    yield factory
    for svc in started:
        await svc.drain()


def pytest_asyncio_loop_factories(config, item):  # noqa: ANN001, ANN201 - pytest-asyncio hook
    """asyncio's loop; tests marked ``both_loops`` also run on uvloop (the service's default)."""
    import asyncio

    if item.get_closest_marker("both_loops") is None:
        return {"asyncio": asyncio.new_event_loop}
    import uvloop
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}
