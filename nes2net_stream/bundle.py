"""Model bundles: one directory (or a .tar.gz / .zip of it) holding a complete detector.

Layout::

    config.json          format name and version, model id, front-end and back-end configs,
                         metadata, the SHA-256 of every other file
    model.safetensors    weights (front-end and back-end state dict)
    calibration.json     the score calibration ({} when none has been fitted)
    MODEL_CARD.md        optional model card

``load_model`` verifies the format version, the checksums, and that the weights match the
configured network exactly (missing, unexpected and mis-shaped tensors are listed).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
import zipfile
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from nes2net_stream import __version__
from nes2net_stream.errors import BundleError
from nes2net_stream.models.detector import Calibration, Detector

FORMAT_NAME = "nes2net-stream-bundle"
FORMAT_VERSION = 1
CONFIG = "config.json"
WEIGHTS = "model.safetensors"
CALIBRATION = "calibration.json"
MODEL_CARD = "MODEL_CARD.md"
BUILTIN_PREFIX = "builtin:"
BUILTIN_MODELS = {"demo": "demo-model"}


def builtin_model_dir(name: str) -> Path:
    """Folder of a model bundle shipped inside the package (``builtin:demo``)."""
    if name not in BUILTIN_MODELS:
        raise BundleError(f"unknown built-in model {name!r}; available: {sorted(BUILTIN_MODELS)}")
    return Path(str(resources.files("nes2net_stream") / "assets" / BUILTIN_MODELS[name]))


def resolve_model_path(spec: str | Path) -> Path:
    """Turn ``builtin:NAME`` or a filesystem path into a path (not yet validated)."""
    text = str(spec)
    if text.startswith(BUILTIN_PREFIX):
        return builtin_model_dir(text[len(BUILTIN_PREFIX):])
    return Path(text).expanduser()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_model(detector: Detector, path: str | Path, *, model_card: str | None = None,
               overwrite: bool = False) -> Path:
    """Write ``detector`` as a bundle directory and return its path."""
    out = Path(path)
    if out.exists():
        if not overwrite and any(out.iterdir()):
            raise BundleError(f"{out} exists and is not empty (use overwrite=True)")
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in detector.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": FORMAT_NAME})
    (out / CALIBRATION).write_text(
        json.dumps(detector.calibration.to_dict() if detector.calibration.fitted else {},
                   indent=2) + "\n", encoding="utf-8")
    files = [WEIGHTS, CALIBRATION]
    if model_card is not None:
        (out / MODEL_CARD).write_text(model_card, encoding="utf-8")
        files.append(MODEL_CARD)
    config = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "library_version": __version__,
        **detector.describe(),
        "sha256": {name: _sha256(out / name) for name in files if name != CALIBRATION},
    }
    (out / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=False) + "\n",
                              encoding="utf-8")
    return out


def _safe_extract(archive: Path, dest: Path) -> None:
    def check(name: str) -> None:
        target = (dest / name).resolve()
        if not str(target).startswith(str(dest.resolve())):
            raise BundleError(f"{archive}: unsafe path in archive: {name}")

    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                for n in zf.namelist():
                    check(n)
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                for m in tf.getmembers():
                    check(m.name)
                    if m.issym() or m.islnk():
                        raise BundleError(f"{archive}: links are not allowed in bundles")
                tf.extractall(dest, filter="data")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"{archive}: not a readable bundle archive ({exc})") from exc


def _bundle_root(folder: Path) -> Path:
    if (folder / CONFIG).is_file():
        return folder
    subdirs = [p for p in folder.iterdir() if p.is_dir()]
    if len(subdirs) == 1 and (subdirs[0] / CONFIG).is_file():
        return subdirs[0]
    raise BundleError(f"{folder}: no {CONFIG} found (not a model bundle)")


def read_bundle_config(folder: Path) -> dict[str, Any]:
    """Read and check the format fields of a bundle's config.json."""
    path = folder / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleError(f"{folder}: no {CONFIG} (not a model bundle)") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: corrupt JSON ({exc})") from exc
    if not isinstance(config, dict) or config.get("format") != FORMAT_NAME:
        raise BundleError(f"{path}: not a {FORMAT_NAME} config (format={config.get('format')!r})"
                          if isinstance(config, dict) else f"{path}: not a JSON object")
    version = config.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise BundleError(f"{path}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format {version} is newer than this version of "
                          f"nes2net-stream supports ({FORMAT_VERSION}); upgrade the package")
    return config


def _verify_checksums(folder: Path, config: dict[str, Any]) -> None:
    sums = config.get("sha256")
    if not isinstance(sums, dict) or WEIGHTS not in sums:
        raise BundleError(f"{folder}/{CONFIG}: missing sha256 of {WEIGHTS}")
    for name, expected in sums.items():
        file = folder / name
        if not file.is_file():
            raise BundleError(f"{folder}: missing file {name}")
        if _sha256(file) != expected:
            raise BundleError(f"{folder}/{name}: checksum mismatch (corrupt or modified file)")


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor],
                      where: str) -> None:
    """Load a state dict, raising BundleError listing missing/unexpected/mis-shaped tensors."""
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k}: {tuple(state[k].shape)} != {tuple(v.shape)}"
                    for k, v in expected.items() if k in state and state[k].shape != v.shape)
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if items:
            more = f" ... (+{len(items) - 10})" if len(items) > 10 else ""
            shown = ", ".join(items[:10]) + more
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise BundleError(f"{where}: weights do not match the configured network; "
                          + "; ".join(problems))
    module.load_state_dict(state, strict=True)


def load_model(path: str | Path, *, device: str | torch.device = "cpu") -> Detector:
    """Load a bundle (directory, .tar.gz/.tgz or .zip, or ``builtin:NAME``) in eval mode.

    Raises:
        BundleError: the bundle is missing, corrupt, from a newer format, or its weights do not
            match its configuration.
    """
    src = resolve_model_path(path)
    if not src.exists():
        raise BundleError(f"model bundle not found: {src}")
    if src.is_file():
        tmp = Path(tempfile.mkdtemp(prefix="nes2net-bundle-"))
        try:
            _safe_extract(src, tmp)
            return _load_dir(_bundle_root(tmp), device)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _load_dir(_bundle_root(src), device)


def _load_dir(folder: Path, device: str | torch.device) -> Detector:
    config = read_bundle_config(folder)
    _verify_checksums(folder, config)
    cal_path = folder / CALIBRATION
    calibration = Calibration()
    if cal_path.is_file():
        try:
            calibration = Calibration.from_dict(json.loads(cal_path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as exc:
            raise BundleError(f"{cal_path}: corrupt JSON ({exc})") from exc
    detector = Detector.from_description(config, calibration=calibration)
    try:
        state = load_file(str(folder / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise BundleError(f"{folder / WEIGHTS}: unreadable weights ({exc})") from exc
    load_state_strict(detector, detector.compatible_state(state), str(folder))
    return detector.to(device).eval()


def archive_bundle(folder: str | Path, archive: str | Path) -> Path:
    """Pack a bundle directory into a .tar.gz archive."""
    src = _bundle_root(Path(folder))
    out = Path(archive)
    with tarfile.open(out, "w:gz") as tf:
        tf.add(src, arcname=src.name)
    return out
