"""Sections of the demo model's card built from evaluation reports.

Used by scripts/model_card.py: whole-call alert figures and the held-out corpus's figures.
"""

from __future__ import annotations

import json
from pathlib import Path


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def alert_rows(loaded: dict[str, dict]) -> list[str]:
    """Table rows of ``eval-alerts`` reports, one per setting and report.

    A label column is added when there are several reports.
    """
    multi = len(loaded) > 1
    head = "| `min_windows_for_state` | genuine calls with any alert | of which transient | " \
           "genuine calls reaching spoof | synthetic calls reaching spoof | " \
           "first alert, s (median) |"
    rows = [("| scored by " if multi else "") + head,
            ("|---" if multi else "") + "|---|---|---|---|---|---|"]
    for label, report in loaded.items():
        for r in report["results"]:
            f = r["figures"]
            n = r["settings"].get("min_windows_for_state",
                                  report["alerts"]["min_windows_for_state"])
            share = {k: f"{f[k]['calls']} of {f[k]['of']}"
                     for k in ("false_alert", "false_spoof", "detected_spoof")}
            rows.append((f"| {label} " if multi else "") +
                        f"| {n} | {share['false_alert']} | "
                        f"{f['transient_false_alert']['calls']} | {share['false_spoof']} | "
                        f"{share['detected_spoof']} | {f['time_to_alert_s']['median']} |")
    return rows


def alerts_section(reports: dict[str, Path]) -> str:
    """Call-level alert figures from ``eval-alerts`` reports (label -> ``alerts.json``).

    One table row per setting and report (e.g. per fold); empty when there are none.
    """
    loaded = {label: json.loads(path.read_text()) for label, path in reports.items()
              if path.is_file()}
    if not loaded:
        return ""
    multi = len(loaded) > 1
    rows = alert_rows(loaded)
    alerts = next(iter(loaded.values()))["alerts"]
    which = ("each fold's distilled model on the calls of its own held-out half" if multi
             else "the model")
    return f"""## Whole calls: what the alert states say

Eval utterances joined into calls of about 20 s (one speaker and system each; `nes2net-stream
data build-calls`), scored by {which} window by window as the live service does and replayed
through the service's alert policy with the default thresholds
({alerts['suspicious_threshold']} / {alerts['spoof_threshold']};
`nes2net-stream eval-alerts`, [evaluation.md](evaluation.md#call-level-alerts-eval-alerts)).
The default is two windows before a channel has a state.

{chr(10).join(rows)}

With a detector this weak, many genuine calls raise an alert at some point: pick thresholds on
your own recorded calls with `eval-alerts` before acting on states automatically.
"""


def heldout_section(report_path: Path | None, model_id: str,
                    alerts_path: Path | None = None) -> str:
    """The held-out corpus's figures (new languages and synthesisers), or nothing.

    ``alerts_path``: ``eval-alerts`` of this model on the held-out corpus's calls, if any.
    """
    if report_path is None:
        return ""
    runs = {name: r for name, r in json.loads(report_path.read_text()).items()
            if r.get("model_id") == model_id}
    if not runs:
        raise SystemExit(f"{report_path} holds no run of {model_id}")
    systems = sorted({s for r in runs.values() for s in r["per_system_eer"]})
    langs = sorted({lang for r in runs.values() for lang in r["false_alarms"]})
    rows = ["| mode | EER (95 % CI) | " + " | ".join(systems) + " | "
            + " | ".join(f"genuine {lang} called spoof" for lang in langs) + " |",
            "|" + "---|" * (2 + len(systems) + len(langs))]
    for name, r in runs.items():
        low, high = r["eer_ci95"]
        rows.append(f"| {r.get('mode') or name} | {pct(r['eer'])} ({100 * low:.1f}-"
                    f"{100 * high:.1f} %) | "
                    + " | ".join(pct(r["per_system_eer"][s]) for s in systems) + " | "
                    + " | ".join(f"{100 * r['false_alarms'][lang]['called_spoof']:.0f} % of "
                                 f"{r['false_alarms'][lang]['trials']}" for lang in langs)
                    + " |")
    table = chr(10).join(rows)
    calls = ""
    if alerts_path is not None and alerts_path.is_file():
        calls = ("\nIts utterances joined into calls of about 20 s (`data build-calls`) and "
                 "replayed through the\nalert policy with the default thresholds "
                 "(`eval-alerts`, as in the whole-call section below):\n\n"
                 + chr(10).join(alert_rows({"": json.loads(alerts_path.read_text())})) + "\n")
    return f"""## New speakers, languages and synthesisers: the held-out corpus

`nes2net-stream data build-heldout` ([corpus.md](corpus.md#held-out-corpus)): five real IVR
voices no recipe here trained on, in French-Canadian, Italian (two), Russian and Colombian
Spanish, against espeak-ng in those languages (H01), festival's Italian diphone voices (H02),
its Russian unit-selection voice (H03), two HTS voices, Catalan and English (H04), and WORLD
copy-synthesis and conversion of the five voices (H05, H06), through the eval channel. Each
system's EER is against all genuine trials; *called spoof* is the share of a language's
genuine trials the calibrated model puts on the spoof side (spoof probability above 0.5), the
false alarms a deployment would see before choosing its own thresholds:

{table}

Other seeds of a recipe can differ here by several points of EER and in their false alarms
per language ([training.md](training.md), "The held-out corpus").
{calls}
"""


def loss_section(evals_dir: Path, clean: dict) -> str:
    """Packet loss on every eval trial (``eval-loss-*``, ``eval --packet-loss``), or nothing.

    Starts with a blank line (it follows the codec table), ends without a newline.
    """
    paths = sorted(evals_dir.glob("eval-loss-*/metrics.json"))
    reports = [json.loads(p.read_text()) for p in paths]
    if not reports:
        return ""
    rows = ["| 20 ms packets lost | filled with | EER | minDCF | actDCF |",
            "|---|---|---|---|---|"]
    if clean:
        m = clean["metrics"]
        rows.append(f"| none | | {pct(m['eer'])} | {m['min_dcf']:.4f} | {m['act_dcf']:.4f} |")
    for rep in sorted(reports, key=lambda r: (r["packet_loss"]["rate"],
                                              r["packet_loss"]["fill"])):
        loss, m = rep["packet_loss"], rep["metrics"]
        rows.append(f"| {100 * loss['rate']:g} % | {loss['fill']} | {pct(m['eer'])} | "
                    f"{m['min_dcf']:.4f} | {m['act_dcf']:.4f} |")
    return f"""

With packets lost on top of each eval trial's channel (`nes2net-stream eval --packet-loss`,
`4s` mode; *conceal* repeats the last packet, fading, as the RTP gateways do; *silence* is what
a receiver without concealment feeds; [evaluation.md](evaluation.md#packet-loss---packet-loss)):

{chr(10).join(rows)}"""
