"""Parameter names of fairseq wav2vec 2.0 and of the WavLM reference code, mapped to transformers.

fairseq's ``Wav2Vec2Model`` and Microsoft's WavLM code (used directly on the asvspoof5 branch
and wrapped by s3prl's ``wavlm_large`` expert, which adds one ``model.`` level) share one naming
scheme; WavLM adds a relative position bias in the first layer and a gate in every layer. The
mapping below is written from the modules' structure:

* convolutional feature encoder, layer-norm mode: ``conv_layers.{i}`` is a Sequential of
  (Conv1d, Dropout, Sequential(transpose, LayerNorm, transpose), GELU), hence ``.0`` for the
  convolution and ``.2.1`` for the layer norm;
* ``layer_norm`` / ``post_extract_proj``: the feature projection;
* ``encoder.pos_conv.0``: the weight-normalised positional convolution (``weight_g`` is the
  magnitude, ``weight_v`` the direction, normalised over all dimensions but the kernel axis);
* ``encoder.layers.{i}``: pre-LN transformer layers (``self_attn``, ``self_attn_layer_norm``,
  ``fc1``, ``fc2``, ``final_layer_norm``); WavLM adds ``self_attn.relative_attention_bias``,
  ``self_attn.grep_linear`` and ``self_attn.grep_a``;
* ``encoder.layer_norm``: the final layer norm.

Pre-training-only tensors (masking embedding, quantiser, projection heads) have no role at
inference and are dropped on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Callable

#: Prefixes (relative to the SSL model) of tensors used only by self-supervised pre-training.
PRETRAINING_ONLY = ("mask_emb", "quantizer.", "input_quantizer.", "project_q.", "project_inp.",
                    "final_proj.", "target_glu.", "label_embs_concat")

IGNORED = "<ignored>"

_LAYER = r"encoder\.layers\.(\d+)\."


def _rules(weight_g: str, weight_v: str) -> list[tuple[re.Pattern[str], Callable[..., str]]]:
    table: list[tuple[str, Callable[..., str]]] = [
        (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)",
         lambda i, p: f"feature_extractor.conv_layers.{i}.conv.{p}"),
        (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)",
         lambda i, p: f"feature_extractor.conv_layers.{i}.layer_norm.{p}"),
        (r"layer_norm\.(weight|bias)", lambda p: f"feature_projection.layer_norm.{p}"),
        (r"post_extract_proj\.(weight|bias)", lambda p: f"feature_projection.projection.{p}"),
        (r"encoder\.pos_conv\.0\.bias", lambda: "encoder.pos_conv_embed.conv.bias"),
        (r"encoder\.pos_conv\.0\.(?:weight_g|parametrizations\.weight\.original0)",
         lambda: weight_g),
        (r"encoder\.pos_conv\.0\.(?:weight_v|parametrizations\.weight\.original1)",
         lambda: weight_v),
        (r"encoder\.layer_norm\.(weight|bias)", lambda p: f"encoder.layer_norm.{p}"),
        (_LAYER + r"self_attn\.(q|k|v|out)_proj\.(weight|bias)",
         lambda i, w, p: f"encoder.layers.{i}.attention.{w}_proj.{p}"),
        (_LAYER + r"self_attn\.relative_attention_bias\.weight",
         lambda i: f"encoder.layers.{i}.attention.rel_attn_embed.weight"),
        (_LAYER + r"self_attn\.grep_linear\.(weight|bias)",
         lambda i, p: f"encoder.layers.{i}.attention.gru_rel_pos_linear.{p}"),
        (_LAYER + r"self_attn\.grep_a",
         lambda i: f"encoder.layers.{i}.attention.gru_rel_pos_const"),
        (_LAYER + r"self_attn_layer_norm\.(weight|bias)",
         lambda i, p: f"encoder.layers.{i}.layer_norm.{p}"),
        (_LAYER + r"fc1\.(weight|bias)",
         lambda i, p: f"encoder.layers.{i}.feed_forward.intermediate_dense.{p}"),
        (_LAYER + r"fc2\.(weight|bias)",
         lambda i, p: f"encoder.layers.{i}.feed_forward.output_dense.{p}"),
        (_LAYER + r"final_layer_norm\.(weight|bias)",
         lambda i, p: f"encoder.layers.{i}.final_layer_norm.{p}"),
    ]
    return [(re.compile(pattern + r"\Z"), fn) for pattern, fn in table]


class SSLNameMap:
    """Maps SSL parameter names (relative to the SSL model) to transformers names.

    Args:
        weight_norm_names: the transformers names of the positional convolution's magnitude
            and direction, which depend on the torch weight-norm API in use.
    """

    def __init__(self, weight_norm_names: tuple[str, str]):
        self._rules = _rules(*weight_norm_names)

    def __call__(self, name: str) -> str | None:
        """The transformers name, :data:`IGNORED` for pre-training tensors, or None if unknown."""
        if name.startswith(PRETRAINING_ONLY):
            return IGNORED
        for pattern, fn in self._rules:
            m = pattern.match(name)
            if m:
                return fn(*m.groups())
        return None


def weight_norm_names(hf_state_keys: list[str] | set[str]) -> tuple[str, str]:
    """Names of the positional convolution's weight-norm tensors in a transformers model."""
    base = "encoder.pos_conv_embed.conv."
    if base + "weight_g" in hf_state_keys:
        return base + "weight_g", base + "weight_v"
    return base + "parametrizations.weight.original0", base + "parametrizations.weight.original1"
