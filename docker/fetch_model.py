"""Build-time helper of the images: stage the model bundle to bake in, and verify it.

Runs in a build stage only (the run stage never downloads). The bundle comes from a local
directory (the ``model`` build context) or from a hub repository that holds a bundle
(``MODEL_HUB_ID``, pinned with ``MODEL_HUB_REVISION``); with neither, the output folder stays
empty and the image expects a bundle mounted at ``/models`` at run time.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path


def _token(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return text or None


def stage(local: Path, out: Path, hub_id: str, revision: str, token_file: Path) -> str:
    """Fill ``out`` with the bundle to bake in; returns a description of its source."""
    has_local = local.is_dir() and any(local.iterdir())
    if hub_id and has_local:
        raise SystemExit("give either the 'model' build context or MODEL_HUB_ID, not both")
    out.mkdir(parents=True, exist_ok=True)
    if hub_id:
        from huggingface_hub import snapshot_download

        snapshot_download(repo_id=hub_id, revision=revision or None, local_dir=str(out),
                          token=_token(token_file))
        shutil.rmtree(out / ".cache", ignore_errors=True)  # download metadata, not the bundle
        return f"hub {hub_id}@{revision}"
    if has_local:
        shutil.copytree(local, out, dirs_exist_ok=True)
        return "the model build context"
    return ""


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point used by the Dockerfiles."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--local", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--hub-id", default="")
    parser.add_argument("--revision", default="main")
    parser.add_argument("--token-file", type=Path, default=Path("/run/secrets/hf_token"))
    args = parser.parse_args(argv)
    source = stage(args.local, args.out, args.hub_id.strip(), args.revision.strip(),
                   args.token_file)
    if not source:
        print("no model baked in: mount a bundle at /models or set NES2NET_MODEL__PATH")
        return 0
    from nes2net_stream.bundle import load_model
    from nes2net_stream.errors import BundleError

    try:
        detector = load_model(args.out, device="cpu")
    except BundleError as exc:
        print(f"the bundle from {source} is not valid: {exc}", file=sys.stderr)
        return 1
    print(f"baked in model {detector.model_id} from {source}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
