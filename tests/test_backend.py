import itertools

import pytest
import torch

from nes2net_stream.errors import BundleError
from nes2net_stream.models.config import BackendConfig
from nes2net_stream.models.nes2net import Nes2Net, count_parameters


def test_nes2net_x_parameter_count_matches_paper():
    # D=1024, ratios 8 and 8, SE ratio 1, dilation 2, mean pooling (official ASVspoof setting)
    model = Nes2Net(BackendConfig(variant="nes2net_x", input_dim=1024, outer_ratio=8,
                                  inner_ratio=8, se_ratio=1, dilation=2, pooling="mean"))
    assert count_parameters(model) == 512_039


def test_parameter_count_by_hand_small_geometry():
    # D=16, N=2 outer groups -> C=8, inner ratio 2 -> width 4, SE ratio 2 -> hidden 4
    cfg = BackendConfig(variant="nes2net", input_dim=16, outer_ratio=2, inner_ratio=2,
                        se_ratio=2, pooling="mean", n_logits=2)
    # conv1 + bn1 + one inner conv + its bn + conv3 + bn3 + SE squeeze + SE excite
    block = ((8 * 8 + 8) + 2 * 8 + (4 * 4 * 3 + 4) + 2 * 4 + (8 * 8 + 8) + 2 * 8
             + (8 * 4 + 4) + (4 * 8 + 8))
    total = block + 2 * 8 + 2 * 16 + (16 * 2 + 2)
    assert count_parameters(Nes2Net(cfg)) == total


@pytest.mark.parametrize(
    "variant,pooling,activation,n_logits",
    list(itertools.product(["nes2net", "nes2net_x"], ["mean", "astp"], ["relu", "selu"], [1, 2])),
)
def test_output_shapes_every_variant(variant, pooling, activation, n_logits):
    cfg = BackendConfig(variant=variant, input_dim=64, outer_ratio=4, inner_ratio=4, se_ratio=2,
                        dilation=2, pooling=pooling, activation=activation, n_logits=n_logits,
                        astp_bottleneck=16)
    model = Nes2Net(cfg).eval()
    x = torch.randn(3, 64, 37)
    y = model(x)
    assert y.shape == (3, n_logits)
    assert torch.isfinite(y).all()
    emb = model.embed(x)
    assert emb.shape == (3, 128 if pooling == "astp" else 64)


def test_time_length_independent_and_gradients_flow():
    model = Nes2Net(BackendConfig(input_dim=32, outer_ratio=4, inner_ratio=2, se_ratio=2))
    for frames in (5, 50, 201):
        out = model(torch.randn(2, 32, frames))
        out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_selu_variant_se_minimum_width():
    cfg = BackendConfig(variant="nes2net_x", input_dim=64, outer_ratio=8, inner_ratio=4,
                        se_ratio=8, activation="selu", se_min_channels=2)
    model = Nes2Net(cfg)
    # C = 8 channels, 8 // 8 = 1 would be the SE width; the SeLU variant raises it to 2
    assert model.Build_in_Res2Nets[0].se.se[1].out_channels == 2


def test_weighted_sum_initialisation():
    model = Nes2Net(BackendConfig(variant="nes2net_x", input_dim=64, outer_ratio=4, inner_ratio=4))
    ws = model.Build_in_Res2Nets[0].weighted_sum
    assert [tuple(w.shape) for w in ws] == [(1, 1, 1, 2), (1, 1, 1, 3), (1, 1, 1, 4)]
    assert torch.allclose(ws[1], torch.full((1, 1, 1, 3), 1 / 3))


def test_wrong_feature_dimension_is_clear():
    model = Nes2Net(BackendConfig(input_dim=64, outer_ratio=4, inner_ratio=4))
    with pytest.raises(ValueError, match="expected \\(batch, 64, frames\\)"):
        model(torch.randn(1, 32, 10))


@pytest.mark.parametrize("bad,match", [
    ({"input_dim": 100, "outer_ratio": 8}, "not divisible"),
    ({"n_logits": 3}, "n_logits"),
    ({"kernel_size": 4}, "odd"),
    ({"variant": "nes3net"}, "variant"),
    ({"unknown": 1}, "unknown key"),
    ({"input_dim": "1024"}, "integer"),
])
def test_invalid_backend_config(bad, match):
    with pytest.raises(BundleError, match=match):
        BackendConfig.from_dict({**BackendConfig().to_dict(), **bad})
