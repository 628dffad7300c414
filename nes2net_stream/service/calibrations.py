"""Score calibrations per ingress: a codec or network path shifts every raw score.

The model's calibration (its bundle's ``calibration.json``) maps raw scores to LLRs for the
channel it was fitted on. Calls arriving through another path (an Opus WebRTC leg, a G.729
trunk behind one gateway) can score systematically higher or lower (docs/evaluation.md,
"Through a codec"), so ``[scoring] calibrations`` maps an ingress name (``generic``,
``webrtc`` or a gateway plugin's name) to a calibration fitted on audio of that path
(``eval --channel ... --calibrate-on dev --calibration-out FILE``). Where one ingress carries
several paths, ``[scoring] calibration_key`` names a metadata field (dotted, e.g.
``custom.codec`` for a gateway's custom parameters) whose value picks the calibration per
call. The scoring worker stays shared; a call's session maps each window's raw score through
the calibration picked for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from nes2net_stream.errors import BundleError, ConfigError
from nes2net_stream.models.detector import Calibration

#: Ingress names that exist without a gateway plugin.
BUILTIN_INGRESS = ("generic", "webrtc")


def load_calibrations(paths: Mapping[str, str]) -> dict[str, Calibration]:
    """Read every configured calibration; a bad one fails naming its key."""
    out: dict[str, Calibration] = {}
    for name, path in paths.items():
        try:
            out[name] = Calibration.read(path)
        except BundleError as exc:
            raise ConfigError(f"scoring.calibrations.{name}: {exc}") from None
    return out


def check_ingress_names(calibrations: Mapping[str, Calibration], gateways: Iterable[str], *,
                        by_metadata: bool = False) -> None:
    """Refuse a calibration for an ingress this service does not run (a typo, silently).

    With ``by_metadata`` (a ``calibration_key`` is set) other names are values calls carry.
    """
    if by_metadata:
        return
    known = (*BUILTIN_INGRESS, *gateways)
    for name in calibrations:
        if name not in known:
            raise ConfigError(f"scoring.calibrations.{name}: no ingress of that name here "
                              f"(one of {', '.join(known)})")


def pick_calibration(calibrations: Mapping[str, Calibration], key: str, ingress: str,
                     metadata: Mapping[str, Any]) -> tuple[str, Calibration] | None:
    """The calibration of one call and its name (``None``: the model's own).

    The one its metadata names under the dotted ``key`` (when set), else its ingress's.
    """
    if key:
        value: Any = metadata
        for part in key.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, str) and value in calibrations:
            return value, calibrations[value]
    cal = calibrations.get(ingress)
    return None if cal is None else (ingress, cal)
