#!/usr/bin/env bash
# Rebuild the bundled demo model from scratch, offline:
#   demo corpus -> training (with dev calibration) -> evaluation on the held-out eval split
#   and on the held-out corpus (new languages and synthesisers) -> bundle in nes2net_stream/assets/demo-model with its model card.
# The recipe (since nes2net-demo-ge2e-v3): the demo recipe on the frozen GE2E speaker
# encoder's second layer (RECIPE + SPEAKER of scripts/demo_recipe.sh; docs/training.md, "A
# frozen speaker encoder as front-end"); it needs the Resemblyzer package's encoder weights
# (`make corpus-extras`), which the bundle then carries. About 25 minutes on 2 CPU cores (12
# for the training, the rest evaluations; plus about 6 for the corpus).
# Paths can be overridden with CORPUS, RUN and SEED.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
CORPUS=${CORPUS:-corpus/demo}
RUN=${RUN:-runs/demo-model}
SEED=${SEED:-0}
OUT=nes2net_stream/assets/demo-model
MODEL_ID=${MODEL_ID:-nes2net-demo-ge2e-v3}

if [ ! -f "$CORPUS/corpus.json" ]; then
  "$PY" -m nes2net_stream data build-demo "$CORPUS" --seed "$SEED" --jobs 2 --no-progress
fi

source scripts/demo_recipe.sh  # RECIPE, SPEAKER
if [ ! -f "$RUN/model/config.json" ]; then
  "$PY" -m nes2net_stream train --database "$CORPUS" --run-dir "$RUN" --out "$RUN/model" \
    --model-id "$MODEL_ID" "${RECIPE[@]}" "${SPEAKER[@]}" --seed "$SEED"
fi

for mode in 4s windows; do
  "$PY" -m nes2net_stream eval --model "$RUN/model" --database "$CORPUS" --split eval \
    --mode "$mode" --out "$RUN/eval-$mode"
done
# robustness to codecs never used in training, on top of each trial's own channel (AMR-NB:
# mobile calls, which the SIPREC gateway now takes in their own codec; highest and lowest mode)
for channel in g726:16000 g723_1 opus_nb:8000 amr_nb:12200 amr_nb:4750; do
  "$PY" -m nes2net_stream eval --model "$RUN/model" --database "$CORPUS" --split eval \
    --mode 4s --channel "$channel" --out "$RUN/eval-channel-${channel//:/-}"
done

# packet loss (RTP trunks): concealed as the RTP gateways do, and zero-filled for comparison
for spec in conceal:0.05 conceal:0.10 silence:0.10; do
  "$PY" -m nes2net_stream eval --model "$RUN/model" --database "$CORPUS" --split eval \
    --mode 4s --packet-loss "${spec#*:}" --loss-fill "${spec%%:*}" \
    --out "$RUN/eval-loss-${spec//:/-}"
done

# whole calls: what the alert states say (one extra window before a first state and without)
rm -rf "$RUN/calls" "$RUN/alerts"
"$PY" -m nes2net_stream data build-calls "$CORPUS" "$RUN/calls" --split eval
"$PY" -m nes2net_stream eval-alerts --model "$RUN/model" --database "$RUN/calls" \
  --out "$RUN/alerts" --vary min_windows_for_state=1,2,3 --no-progress

# new speakers, languages and synthesisers: the held-out corpus (`make corpus-heldout`'s
# packages; skipped, and left out of the model card, when they are not installed)
HELDOUT=${HELDOUT:-corpus/heldout}
card_extra=()
if [ -f "$HELDOUT/corpus.json" ] || "$PY" -m nes2net_stream data build-heldout "$HELDOUT" \
    --seed "$SEED" --jobs 2 --no-progress; then
  for mode in 4s windows; do
    "$PY" -m nes2net_stream eval --model "$RUN/model" --database "$HELDOUT" --split eval \
      --mode "$mode" --out "$RUN/heldout-$mode"
  done
  "$PY" scripts/heldout_report.py "$HELDOUT" --json 4s="$RUN/heldout-4s" \
    windows="$RUN/heldout-windows" > "$RUN/heldout-report.json"
  rm -rf "$RUN/heldout-calls" "$RUN/heldout-alerts"
  "$PY" -m nes2net_stream data build-calls "$HELDOUT" "$RUN/heldout-calls" --split eval
  "$PY" -m nes2net_stream eval-alerts --model "$RUN/model" --database "$RUN/heldout-calls" \
    --out "$RUN/heldout-alerts" --no-progress
  card_extra=(--heldout-report "$RUN/heldout-report.json"
    --heldout-alerts "$RUN/heldout-alerts/alerts.json")
fi

rm -rf "$OUT"
cp -r "$RUN/model" "$OUT"
"$PY" scripts/model_card.py --run "$RUN" --corpus "$CORPUS" --bundle "$OUT" \
  --doc docs/model-card-demo.md "${card_extra[@]}"
echo "demo model written to $OUT"
