"""Official-format Nes2Net state dicts with random weights and an independent reference forward.

Everything here is plain torch functional code written from the structure of the published
models (fairseq wav2vec 2.0, Microsoft's WavLM code and s3prl's WavLM expert, the authors'
``Nested_Res2Net_TDNN`` / ``Bottle2neck`` / ``SEModule`` / ``ASTP`` / ``SSLModel`` modules). It
does not import nes2net_stream, so a mapping or modelling mistake there cannot cancel out here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
State = dict[str, Tensor]


@dataclass(frozen=True)
class Geometry:
    """A scaled-down SSL model plus back-end."""

    conv: tuple[tuple[int, int, int], ...] = ((16, 10, 5),) + ((16, 3, 2),) * 4 + ((16, 2, 2),) * 2
    conv_bias: bool = True
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    ffn: int = 128
    pos_kernel: int = 16
    pos_groups: int = 2
    wavlm: bool = False
    buckets: int = 32
    max_distance: int = 100
    outer: int = 4
    inner: int = 4
    se_ratio: int = 1
    se_min: int = 1
    nested_x: bool = True
    selu: bool = False
    pooling: str = "mean"
    astp_bottleneck: int = 8
    n_logits: int = 2
    dilation: int = 2
    aggregation: str = "last"

    def hf_overrides(self) -> dict:
        """The same SSL geometry in transformers' configuration keys."""
        d = {"hidden_size": self.hidden, "num_hidden_layers": self.layers,
             "num_attention_heads": self.heads, "intermediate_size": self.ffn,
             "conv_dim": [c[0] for c in self.conv], "conv_kernel": [c[1] for c in self.conv],
             "conv_stride": [c[2] for c in self.conv], "conv_bias": self.conv_bias,
             "num_conv_pos_embeddings": self.pos_kernel,
             "num_conv_pos_embedding_groups": self.pos_groups}
        if self.wavlm:
            d.update(num_buckets=self.buckets, max_bucket_distance=self.max_distance)
        return d


class _Rand:
    def __init__(self, seed: int):
        self.g = torch.Generator().manual_seed(seed)

    def normal(self, *shape: int, std: float = 1.0, mean: float = 0.0) -> Tensor:
        return torch.randn(*shape, generator=self.g) * std + mean

    def uniform(self, *shape: int, low: float, high: float) -> Tensor:
        return torch.rand(*shape, generator=self.g) * (high - low) + low


def _linear(r: _Rand, s: State, name: str, n_in: int, n_out: int, bias: bool = True) -> None:
    s[name + ".weight"] = r.normal(n_out, n_in, std=1 / math.sqrt(n_in))
    if bias:
        s[name + ".bias"] = r.normal(n_out, std=0.1)


def _norm(r: _Rand, s: State, name: str, n: int, batch: bool = False) -> None:
    s[name + ".weight"] = r.normal(n, std=0.1, mean=1.0)
    s[name + ".bias"] = r.normal(n, std=0.1)
    if batch:
        s[name + ".running_mean"] = r.normal(n, std=0.1)
        s[name + ".running_var"] = r.uniform(n, low=0.5, high=1.5)
        s[name + ".num_batches_tracked"] = torch.tensor(100)


def _conv(r: _Rand, s: State, name: str, n_in: int, n_out: int, *kernel: int,
          bias: bool = True) -> None:
    fan = n_in * math.prod(kernel)
    s[name + ".weight"] = r.normal(n_out, n_in, *kernel, std=1 / math.sqrt(fan))
    if bias:
        s[name + ".bias"] = r.normal(n_out, std=0.1)


def ssl_state(g: Geometry, r: _Rand, pretraining_extras: bool) -> State:
    """fairseq / WavLM-reference parameter names of the SSL model (no prefix)."""
    s: State = {}
    n_in = 1
    for i, (dim, k, _) in enumerate(g.conv):
        _conv(r, s, f"feature_extractor.conv_layers.{i}.0", n_in, dim, k, bias=g.conv_bias)
        _norm(r, s, f"feature_extractor.conv_layers.{i}.2.1", dim)
        n_in = dim
    _norm(r, s, "layer_norm", n_in)
    _linear(r, s, "post_extract_proj", n_in, g.hidden)
    c, k = g.hidden, g.pos_kernel
    s["encoder.pos_conv.0.bias"] = r.normal(c, std=0.1)
    s["encoder.pos_conv.0.weight_g"] = r.uniform(1, 1, k, low=0.5, high=1.5)
    s["encoder.pos_conv.0.weight_v"] = r.normal(c, c // g.pos_groups, k)
    for i in range(g.layers):
        p = f"encoder.layers.{i}."
        for proj in ("q", "k", "v", "out"):
            _linear(r, s, p + f"self_attn.{proj}_proj", c, c)
        if g.wavlm:
            if i == 0:
                s[p + "self_attn.relative_attention_bias.weight"] = r.normal(g.buckets, g.heads)
            _linear(r, s, p + "self_attn.grep_linear", c // g.heads, 8)
            s[p + "self_attn.grep_a"] = r.normal(1, g.heads, 1, 1, std=0.2, mean=1.0)
        _norm(r, s, p + "self_attn_layer_norm", c)
        _linear(r, s, p + "fc1", c, g.ffn)
        _linear(r, s, p + "fc2", g.ffn, c)
        _norm(r, s, p + "final_layer_norm", c)
    _norm(r, s, "encoder.layer_norm", c)
    if pretraining_extras:  # fairseq pre-training heads, saved along with the model
        s["mask_emb"] = r.uniform(c, low=0.0, high=1.0)
        s["quantizer.vars"] = r.normal(1, 2 * 8, 12)
        _linear(r, s, "quantizer.weight_proj", n_in, 2 * 8)
        _linear(r, s, "project_q", 24, 24)
        _linear(r, s, "final_proj", c, 24)
    return s


def aggregation_state(g: Geometry, r: _Rand) -> State:
    """``ssl_model.*`` parameters of the CtrSVDD SSLModel's layer aggregation."""
    n = g.layers + 1
    if g.aggregation == "sea":
        return {"fc_att_merge.0.weight": r.normal(n // 3, n, std=0.5),
                "fc_att_merge.2.weight": r.normal(n, n // 3, std=0.5)}
    if g.aggregation == "weighted_sum":
        return {"weight_hidd": r.normal(n, std=0.5, mean=1.0)}
    if g.aggregation == "attentive_merge":
        s = {"W": r.normal(g.hidden, 1, std=0.2), "W1": r.normal(n, n // 2),
             "W2": r.normal(n // 2, n)}
        _linear(r, s, "linear_proj", n * g.hidden, g.hidden)
        return s
    return {}


def backend_state(g: Geometry, r: _Rand) -> State:
    """``Nested_Res2Net_TDNN.*`` parameters."""
    s: State = {}
    d = g.hidden
    big_c = d // g.outer
    width = big_c // g.inner
    se_hidden = max(big_c // g.se_ratio, g.se_min)
    for i in range(g.outer - 1):
        p = f"Build_in_Res2Nets.{i}."
        _conv(r, s, p + "conv1", big_c, width * g.inner, 1)
        _norm(r, s, p + "bn1", width * g.inner, batch=True)
        for j in range(g.inner - 1):
            if g.nested_x:
                _conv(r, s, p + f"convs.{j}", width, width, 3, 1)
                s[p + f"weighted_sum.{j}"] = r.normal(1, 1, 1, j + 2, std=0.1, mean=1 / (j + 2))
            else:
                _conv(r, s, p + f"convs.{j}", width, width, 3)
            _norm(r, s, p + f"bns.{j}", width, batch=True)
        _conv(r, s, p + "conv3", width * g.inner, big_c, 1)
        _norm(r, s, p + "bn3", big_c, batch=True)
        _conv(r, s, p + "se.se.1", big_c, se_hidden, 1)
        _conv(r, s, p + "se.se.3", se_hidden, big_c, 1)
        _norm(r, s, f"bns.{i}", big_c, batch=True)
    _norm(r, s, "bn", d, batch=True)
    pooled = d
    if g.pooling == "astp":
        _conv(r, s, "pooling.linear1", d, g.astp_bottleneck, 1)
        _conv(r, s, "pooling.linear2", g.astp_bottleneck, d, 1)
        pooled = 2 * d
    _linear(r, s, "fc", pooled, g.n_logits)
    return s


def official_state(g: Geometry, ssl_prefix: str, seed: int = 0,
                   pretraining_extras: bool = False) -> State:
    """A whole official checkpoint: SSL + aggregation + back-end, official names."""
    r = _Rand(seed)
    s = {ssl_prefix + k: v for k, v in ssl_state(g, r, pretraining_extras).items()}
    s.update({"ssl_model." + k: v for k, v in aggregation_state(g, r).items()})
    s.update({"Nested_Res2Net_TDNN." + k: v for k, v in backend_state(g, r).items()})
    return s


# ----------------------------------------------------------------------------- reference forward


def _ln(x: Tensor, s: State, name: str, eps: float = 1e-5) -> Tensor:
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * s[name + ".weight"] + s[name + ".bias"]


def _lin(x: Tensor, s: State, name: str) -> Tensor:
    y = x @ s[name + ".weight"].T
    return y + s[name + ".bias"] if name + ".bias" in s else y


def _gelu(x: Tensor) -> Tensor:
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _buckets(t: int, num_buckets: int, max_distance: int) -> Tensor:
    rel = torch.arange(t)[None, :] - torch.arange(t)[:, None]  # key - query
    half = num_buckets // 2
    out = (rel > 0).long() * half
    dist = rel.abs()
    exact = half // 2
    far = exact + (torch.log(dist.float().clamp(min=1) / exact) / math.log(max_distance / exact)
                   * (half - exact)).long()
    far = far.clamp(max=half - 1)
    return out + torch.where(dist < exact, dist, far)


def _attention(h: Tensor, s: State, p: str, g: Geometry, bias: Tensor | None) -> Tensor:
    b, t, c = h.shape
    dh = c // g.heads

    def heads(x: Tensor) -> Tensor:
        return x.view(b, t, g.heads, dh).transpose(1, 2)  # B H T dh

    q = heads(_lin(h, s, p + "q_proj")) * dh ** -0.5
    k = heads(_lin(h, s, p + "k_proj"))
    v = heads(_lin(h, s, p + "v_proj"))
    scores = q @ k.transpose(-1, -2)
    if bias is not None:
        gate_in = heads(h) @ s[p + "grep_linear.weight"].T + s[p + "grep_linear.bias"]
        gates = torch.sigmoid(gate_in.view(b, g.heads, t, 2, 4).sum(-1))
        ga, gb = gates[..., :1], gates[..., 1:]
        gate = ga * (gb * s[p + "grep_a"] - 1.0) + 2.0  # B H T 1
        scores = scores + gate * bias[None]
    out = torch.softmax(scores, dim=-1) @ v
    return _lin(out.transpose(1, 2).reshape(b, t, c), s, p + "out_proj")


def reference_ssl(s: State, wave: Tensor, g: Geometry) -> tuple[Tensor, list[Tensor]]:
    """Encoder output and [input of layer 0, output of layer 0, ...] of the SSL model."""
    x = wave[:, None, :]
    for i, (_, _, stride) in enumerate(g.conv):
        p = f"feature_extractor.conv_layers.{i}."
        x = F.conv1d(x, s[p + "0.weight"], s.get(p + "0.bias"), stride=stride)
        x = _gelu(_ln(x.transpose(1, 2), s, p + "2.1").transpose(1, 2))
    x = _lin(_ln(x.transpose(1, 2), s, "layer_norm"), s, "post_extract_proj")
    v, gmag = s["encoder.pos_conv.0.weight_v"], s["encoder.pos_conv.0.weight_g"]
    weight = v * (gmag / v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt())
    k = g.pos_kernel
    pc = F.conv1d(x.transpose(1, 2), weight, s["encoder.pos_conv.0.bias"], padding=k // 2,
                  groups=g.pos_groups)
    if k % 2 == 0:
        pc = pc[..., :-1]
    x = x + _gelu(pc).transpose(1, 2)
    bias = None
    if g.wavlm:
        emb = s["encoder.layers.0.self_attn.relative_attention_bias.weight"]
        bias = emb[_buckets(x.shape[1], g.buckets, g.max_distance)].permute(2, 0, 1)
    hidden = [x]
    for i in range(g.layers):
        p = f"encoder.layers.{i}."
        x = x + _attention(_ln(x, s, p + "self_attn_layer_norm"), s, p + "self_attn.", g, bias)
        ff = _lin(_gelu(_lin(_ln(x, s, p + "final_layer_norm"), s, p + "fc1")), s, p + "fc2")
        x = x + ff
        hidden.append(x)
    return _ln(x, s, "encoder.layer_norm"), hidden


def reference_aggregate(s: State, hidden: list[Tensor], g: Geometry) -> Tensor:
    """The CtrSVDD SSLModel's SEA / weighted sum / attentive merge over hidden states."""
    n = len(hidden)
    if g.aggregation == "weighted_sum":
        w = torch.softmax(s["weight_hidd"], dim=-1)
        return sum(w[i] * hidden[i] for i in range(n))
    stacked = torch.stack(hidden, dim=1)  # B L T F
    if g.aggregation == "sea":
        y = stacked.mean(dim=(2, 3))
        y = torch.sigmoid(torch.relu(y @ s["fc_att_merge.0.weight"].T)
                          @ s["fc_att_merge.2.weight"].T)
        return (stacked * y[:, :, None, None]).sum(dim=1)
    z = F.silu(stacked.mean(dim=2, keepdim=True) @ s["W"]).view(-1, n)
    z = torch.sigmoid(F.silu(z @ s["W1"]) @ s["W2"])
    x = stacked * z[:, :, None, None]
    b, _, t, f = x.shape
    return _lin(x.permute(0, 2, 3, 1).reshape(b, t, f * n), s, "linear_proj")


def _bn(x: Tensor, s: State, name: str) -> Tensor:
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return ((x - s[name + ".running_mean"].view(shape))
            / torch.sqrt(s[name + ".running_var"].view(shape) + 1e-5)
            * s[name + ".weight"].view(shape) + s[name + ".bias"].view(shape))


def _bottle2neck(x: Tensor, s: State, p: str, g: Geometry) -> Tensor:
    act = F.selu if g.selu else F.relu
    pad = g.dilation  # floor(3 / 2) * dilation
    out = _bn(act(F.conv1d(x, s[p + "conv1.weight"], s[p + "conv1.bias"])), s, p + "bn1")
    width = out.shape[1] // g.inner
    spx = torch.split(out, width, dim=1)
    pieces = []
    if g.nested_x:
        sp = spx[-1].unsqueeze(-1)
        for j in range(g.inner - 1):
            sp = torch.cat((sp, spx[j].unsqueeze(-1)), dim=-1)
            sp = _bn(act(F.conv2d(sp, s[p + f"convs.{j}.weight"], s[p + f"convs.{j}.bias"],
                                  padding=(pad, 0), dilation=(g.dilation, 1))), s, p + f"bns.{j}")
            pieces.append((sp * s[p + f"weighted_sum.{j}"]).sum(dim=-1))
    else:
        sp = None
        for j in range(g.inner - 1):
            sp = spx[j] if sp is None else sp + spx[j]
            sp = _bn(act(F.conv1d(sp, s[p + f"convs.{j}.weight"], s[p + f"convs.{j}.bias"],
                                  padding=pad, dilation=g.dilation)), s, p + f"bns.{j}")
            pieces.append(sp)
    pieces.append(spx[-1])
    out = F.conv1d(torch.cat(pieces, dim=1), s[p + "conv3.weight"], s[p + "conv3.bias"])
    out = _bn(act(out), s, p + "bn3")
    se = out.mean(dim=-1, keepdim=True)
    se = torch.relu(F.conv1d(se, s[p + "se.se.1.weight"], s[p + "se.se.1.bias"]))
    se = torch.sigmoid(F.conv1d(se, s[p + "se.se.3.weight"], s[p + "se.se.3.bias"]))
    return out * se + x


def reference_backend(s: State, feats: Tensor, g: Geometry) -> Tensor:
    """``Nested_Res2Net_TDNN`` on (B, D, T) features."""
    act = F.selu if g.selu else F.relu
    spx = torch.split(feats, feats.shape[1] // g.outer, dim=1)
    outs, sp = [], None
    for i in range(g.outer - 1):
        sp = spx[i] if sp is None else sp + spx[i]
        sp = _bn(act(_bottle2neck(sp, s, f"Build_in_Res2Nets.{i}.", g)), s, f"bns.{i}")
        outs.append(sp)
    outs.append(spx[-1])
    x = act(_bn(torch.cat(outs, dim=1), s, "bn"))
    if g.pooling == "astp":
        a = torch.tanh(F.conv1d(x, s["pooling.linear1.weight"], s["pooling.linear1.bias"]))
        a = torch.softmax(F.conv1d(a, s["pooling.linear2.weight"], s["pooling.linear2.bias"]),
                          dim=2)
        mean = (a * x).sum(dim=2)
        std = ((a * x * x).sum(dim=2) - mean ** 2).clamp(min=1e-10).sqrt()
        pooled = torch.cat((mean, std), dim=1)
    else:
        pooled = x.mean(dim=-1)
    return _lin(pooled, s, "fc")


def _strip(state: State, prefix: str) -> State:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def reference_logits(state: State, wave: Tensor, g: Geometry, ssl_prefix: str, *,
                     s3prl: bool) -> Tensor:
    """The official model's logits from an official state dict (eval mode)."""
    ssl = _strip(state, ssl_prefix)
    if s3prl:  # the WavLM Large expert layer-normalises every waveform (cfg.normalize)
        mean = wave.mean(dim=-1, keepdim=True)
        var = ((wave - mean) ** 2).mean(dim=-1, keepdim=True)
        wave = (wave - mean) / torch.sqrt(var + 1e-5)
    final, hidden = reference_ssl(ssl, wave, g)
    if g.aggregation == "last":
        feats = final
    else:
        # s3prl hooks: the inputs of every layer, then the encoder output (after its layer norm)
        feats = reference_aggregate(_strip(state, "ssl_model."), hidden[:-1] + [final], g)
    return reference_backend(_strip(state, "Nested_Res2Net_TDNN."), feats.transpose(1, 2), g)


def pad_repeat(x: Tensor, n: int) -> Tensor:
    """The official scripts' crop / pad-by-repetition of a 1-D signal to n samples."""
    if x.shape[0] >= n:
        return x[:n]
    reps = n // x.shape[0] + 1
    return x.repeat(reps)[:n]
