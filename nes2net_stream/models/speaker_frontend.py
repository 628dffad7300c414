"""Frozen pre-trained speaker encoder as a frame-level front-end.

A speaker encoder trained with the generalised end-to-end loss (GE2E, Wan et al.,
arXiv 1710.10467) on the speech of thousands of real speakers has learnt what real voices
look like across microphones and channels. Its stacked LSTM layers, read frame by frame,
give the Nes2Net back-end a learnt representation of speech where a spectral front-end gives
raw spectra: on the demo corpus it generalises better to unseen speakers and codecs
(docs/training.md). The encoder stays frozen; only a softmax mix of its layers and the
back-end are trained.

Weights come from a local file in the layout of the Resemblyzer package's ``pretrained.pt``
(a 3-layer, 256-unit LSTM on 40 mel bands; Apache-2.0) and are stored in the model bundle
afterwards, so a trained detector needs no other package. Nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import torch
from torch import nn

from nes2net_stream.errors import BundleError
from nes2net_stream.models.config import SpeakerEncoderConfig

SAMPLE_RATE = 16_000
_RMS_FLOOR = 1e-4  # -80 dBFS: silence is not amplified without bound


_MEL_LIN_STEP = 200.0 / 3.0  # Hz per mel below 1 kHz (Slaney scale)
_MEL_LOG_STEP = math.log(6.4) / 27.0  # log-Hz per mel above 1 kHz


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    """Slaney mel scale: linear below 1 kHz, logarithmic above."""
    return torch.where(f >= 1000.0,
                       15.0 + torch.log(f.clamp_min(1e-10) / 1000.0) / _MEL_LOG_STEP,
                       f / _MEL_LIN_STEP)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return torch.where(m >= 15.0, 1000.0 * torch.exp(_MEL_LOG_STEP * (m - 15.0)),
                       _MEL_LIN_STEP * m)


def slaney_mel_filterbank(n_mels: int, n_fft: int, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Triangular mel filters, Slaney scale and area normalisation, (n_fft // 2 + 1, n_mels).

    The filterbank speaker encoders of the Resemblyzer family were trained with (the default
    mel filterbank of common audio libraries), computed here without them.
    """
    freqs = torch.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1, dtype=torch.float64)
    top = _hz_to_mel(torch.tensor(sample_rate / 2.0, dtype=torch.float64))
    hz = _mel_to_hz(torch.linspace(0.0, float(top), n_mels + 2, dtype=torch.float64))
    widths = hz[1:] - hz[:-1]
    ramps = hz[:, None] - freqs[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)
    weights *= (2.0 / (hz[2:] - hz[:-2]))[:, None]
    return weights.T.to(torch.float32)


class SpeakerFrontend(nn.Module):
    """Waveform (B, S) at 16 kHz to (B, hidden_size, frames) mixed LSTM-layer features."""

    def __init__(self, cfg: SpeakerEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)
        self.register_buffer("mel", slaney_mel_filterbank(cfg.n_mels, cfg.n_fft),
                             persistent=False)
        # with one layer chosen, the layers above it are neither computed nor stored
        self.layers = nn.ModuleList(
            nn.LSTM(cfg.n_mels if i == 0 else cfg.hidden_size, cfg.hidden_size, 1,
                    batch_first=True)
            for i in range(cfg.layer or cfg.num_layers))
        for p in self.layers.parameters():
            p.requires_grad_(False)
        self.layer_logits = nn.Parameter(torch.zeros(cfg.num_layers),
                                         requires_grad=not cfg.layer)

    @property
    def output_dim(self) -> int:
        """Feature dimension D given to the back-end."""
        return self.cfg.hidden_size

    def head_parameters(self) -> list[nn.Parameter]:
        """The trainable part (the layer mix), trained at the back-end's learning rate."""
        return [] if self.cfg.layer else [self.layer_logits]

    def layer_weights(self) -> torch.Tensor:
        """Softmax weights of the LSTM layers in the output mix."""
        return torch.softmax(self.layer_logits.float(), dim=0)

    def mel_frames(self, wave: torch.Tensor) -> torch.Tensor:
        """Volume-normalised power mel spectrogram, (B, frames, n_mels), float32."""
        cfg = self.cfg
        x = wave.float()
        rms = x.square().mean(dim=1, keepdim=True).sqrt().clamp_min(_RMS_FLOOR)
        x = x * (10.0 ** (cfg.target_dbfs / 20.0) / rms)
        spec = torch.stft(x, n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                          window=self.window.float(), center=True, pad_mode="constant",
                          return_complex=True)
        power = spec.real.square() + spec.imag.square()  # (B, bins, frames)
        return torch.einsum("bft,fn->btn", power, self.mel.float())

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """Compute (B, D, frames) features of (B, S) float waveforms, in the waveform's dtype.

        The frozen encoder always runs in float32: autocast is off inside (the service's
        CUDA autocast would hand the recurrent cells bf16 inputs) and a cast of the whole
        model (the service's default ``dtype_mode = "weights"``) leaves its layers in float32
        (:meth:`_apply`); only its output takes the waveform's dtype for the back-end. A
        recurrent state carried through 400 steps in bf16 would drift from what the model
        was trained on.
        """
        with torch.autocast(device_type=wave.device.type, enabled=False):
            out = self._features(self.mel_frames(wave))
        return out.to(wave.dtype) if wave.is_floating_point() else out

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 (nn.Module's signature)
        """Apply ``fn`` (a device move or cast), keeping the encoder in float32.

        Dtype casts leave the LSTM weights, the analysis window and the filterbank as they were
        (cast there and back, they would be rounded to the lower precision).
        """
        before = {id(p): p.data for p in self.layers.parameters()}
        buffers = {"window": self.window, "mel": self.mel}
        super()._apply(fn, recurse)
        for name, old in buffers.items():
            now = getattr(self, name)
            if now.dtype != old.dtype:
                setattr(self, name, old.to(now.device))
        cast = False
        for p in self.layers.parameters():
            old = before.get(id(p))
            if old is not None and p.dtype != old.dtype:
                p.data = old.to(p.device)
                cast = True
        if cast:
            for lstm in self.layers:
                lstm.flatten_parameters()  # one contiguous block again for cuDNN
        return self

    def _features(self, h: torch.Tensor) -> torch.Tensor:
        if self.cfg.layer:
            for lstm in self.layers:
                h, _ = lstm(h)
            return h.transpose(1, 2)
        mix = self.layer_weights().to(h.dtype)
        out = None
        for i, lstm in enumerate(self.layers):
            h, _ = lstm(h)
            out = h * mix[i] if out is None else out + h * mix[i]
        assert out is not None
        return out.transpose(1, 2)

    def compatible_state(self, state: dict[str, torch.Tensor],
                         prefix: str) -> dict[str, torch.Tensor]:
        """``state`` without the layers this front-end does not build.

        Bundles written before only the used layers were stored (``nes2net-demo-ge2e-v3`` as
        first released) hold every layer of the encoder; the unused ones are dropped on load.
        """
        built = len(self.layers)
        unused = tuple(f"{prefix}layers.{i}." for i in range(built, self.cfg.num_layers))
        return {k: v for k, v in state.items() if not k.startswith(unused)} if unused else state

    def load_encoder(self, state: dict[str, torch.Tensor]) -> None:
        """Copy a GE2E LSTM state (``lstm.weight_ih_l0`` ... keys) into the built layers."""
        for i, lstm in enumerate(self.layers):
            for name, param in lstm.named_parameters():
                key = f"lstm.{name[:-1]}{i}"  # weight_ih_l0 of layer i <- lstm.weight_ih_l<i>
                if key not in state:
                    raise BundleError(f"speaker encoder weights: missing {key}")
                if tuple(state[key].shape) != tuple(param.shape):
                    raise BundleError(f"speaker encoder weights: {key} has shape "
                                      f"{tuple(state[key].shape)}, expected {tuple(param.shape)}")
                with torch.no_grad():
                    param.copy_(state[key])


def read_ge2e_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The LSTM state of a Resemblyzer-format ``pretrained.pt`` (tensors only; no code runs).

    Raises:
        BundleError: the file is missing, not a checkpoint, or has no LSTM state.
    """
    p = Path(path)
    if not p.is_file():
        raise BundleError(f"speaker encoder weights: {p} is not a file")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same user error
        raise BundleError(f"speaker encoder weights: cannot read {p}: {exc}") from exc
    state = data.get("model_state", data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not any(str(k).startswith("lstm.") for k in state):
        raise BundleError(f"speaker encoder weights: {p} holds no 'lstm.*' tensors")
    return {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def installed_resemblyzer_weights() -> Path | None:
    """``pretrained.pt`` of an installed Resemblyzer package, found without importing it."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "pretrained.pt"
        if candidate.is_file():
            return candidate
    return None
