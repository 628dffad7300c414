"""Shared test helpers: tiny SSL configurations and audio generators."""

from __future__ import annotations

import numpy as np


def tiny_hf_config(family: str = "wav2vec2", *, stable_layer_norm: bool = True,
                   hidden: int = 32, layers: int = 2) -> dict:
    """A randomly initialised transformers config small enough for CPU tests."""
    import transformers as tf

    cls = {"wav2vec2": tf.Wav2Vec2Config, "wavlm": tf.WavLMConfig,
           "hubert": tf.HubertConfig}[family]
    kwargs = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                  intermediate_size=2 * hidden, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
                  num_conv_pos_embedding_groups=2, do_stable_layer_norm=stable_layer_norm,
                  feat_extract_norm="layer" if stable_layer_norm else "group")
    if family == "wavlm":
        kwargs["num_buckets"] = 32
        kwargs["max_bucket_distance"] = 100
    return cls(**kwargs).to_dict()


def tiny_ssl_detector():
    """A small wav2vec 2.0-geometry detector (random weights) with a Nes2Net back-end, eval."""
    from nes2net_stream.models.config import BackendConfig, SSLConfig
    from nes2net_stream.models.detector import Detector

    return Detector(SSLConfig(family="wav2vec2", aggregation="last",
                              hf_config=tiny_hf_config("wav2vec2")),
                    BackendConfig(input_dim=32, outer_ratio=4, inner_ratio=2, se_ratio=2)).eval()


def tone_bursts(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """Voiced-speech-like harmonic bursts separated by pauses (float32 in [-1, 1])."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    x = sum(np.sin(k * phase) / k for k in range(1, 15))
    envelope = (np.sin(2 * np.pi * 0.7 * t) > -0.3).astype(float)
    x = x * envelope + 0.003 * rng.standard_normal(t.shape)
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def cuda_bf16_frontend(seed: int):
    """A wav2vec 2.0 front-end (256 wide, 4 layers, random weights) in bf16 on CUDA, and a
    batch of 8 two-second bf16 waveforms for it."""
    import torch

    from nes2net_stream.models.config import SSLConfig
    from nes2net_stream.models.ssl_frontend import SSLFrontend

    torch.manual_seed(seed)
    cfg = SSLConfig(family="wav2vec2", aggregation="last",
                    hf_config=tiny_hf_config("wav2vec2", hidden=256, layers=4))
    fe = SSLFrontend(cfg).eval().cuda().to(torch.bfloat16)
    return fe, 0.1 * torch.randn(8, 32000, device="cuda", dtype=torch.bfloat16)
