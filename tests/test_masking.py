"""SpecAugment-style masking of the back-end's input in training."""

import pytest
import torch
from test_training import make

from nes2net_stream.errors import ConfigError
from nes2net_stream.training.masking import mask_features
from nes2net_stream.training.trainer import TrainConfig


def features() -> torch.Tensor:
    return torch.randn(16, 40, 100, generator=torch.Generator().manual_seed(99)) + 5.0


def masked(seed: int, **kw) -> torch.Tensor:
    return mask_features(features(), generator=torch.Generator().manual_seed(seed), **kw)


def test_masks_zero_whole_bands_and_spans_within_their_widths():
    out = masked(0, max_channels=6, max_frames=10)
    zero = out == 0
    band = zero.all(dim=2)  # (B, D): channels zeroed in every frame
    span = zero.all(dim=1)  # (B, T): frames zeroed in every channel
    assert ((zero == (band[:, :, None] | span[:, None, :])).all())  # nothing else is touched
    assert int(band.sum(dim=1).max()) <= 2 * 6 and int(span.sum(dim=1).max()) <= 2 * 10
    assert band.any() and span.any()
    assert torch.equal(out[~zero], features()[~zero])  # the rest is unchanged


def test_masks_are_reproducible_and_differ_between_rows_and_seeds():
    a, b = masked(3, max_channels=8, max_frames=0), masked(3, max_channels=8, max_frames=0)
    assert torch.equal(a == 0, b == 0)
    assert not torch.equal(a == 0, masked(4, max_channels=8, max_frames=0) == 0)
    bands = [(a[i] == 0).all(dim=1) for i in range(a.shape[0])]
    assert any(not torch.equal(bands[0], other) for other in bands[1:])


def test_zero_widths_leave_the_features_unchanged():
    feats = torch.randn(4, 8, 20)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(mask_features(feats, max_channels=0, max_frames=0, generator=gen), feats)


def test_widths_larger_than_the_features_are_capped():
    out = masked(1, max_channels=1000, max_frames=1000)
    assert out.shape == (16, 40, 100)


def test_training_with_masks_lowers_the_loss_and_changes_the_result(toy_corpus, tmp_path):
    plain = make(toy_corpus, tmp_path / "plain", epochs=3)
    plain.fit()
    trainer = make(toy_corpus, tmp_path / "masked", epochs=3, mask_channels=6, mask_frames=20)
    trainer.fit()
    losses = [e.train_loss for e in trainer.history]
    assert losses[-1] < losses[0]
    assert trainer.history[-1].dev_eer <= 0.25
    assert losses != [e.train_loss for e in plain.history]


@pytest.mark.parametrize("field", ["mask_channels", "mask_frames"])
def test_negative_mask_widths_are_refused(field):
    with pytest.raises(ConfigError, match=field):
        TrainConfig(**{field: -1})
