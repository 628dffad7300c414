#!/usr/bin/env bash
# Experiment (docs/training.md, "Bundling every eval speaker"): the bundled model's recipe
# (three teachers + a distilled model) trained on the corpus's train and eval splits merged,
# less the sample calls' speaker; its held-out estimate from the same recipe in two speaker
# folds (each eval trial scored by a distilled model that never heard its speaker); a model
# card for it under $RUN (not bundled). Every training run takes 11-16 minutes on 2 CPU cores:
# four for the model, eight more for the estimate (the fold teachers of
# scripts/exp_more_speakers.sh under $EXP are reused), about 3 hours in all.
# Paths can be overridden with CORPUS, RUN, EXP, DB and SEED.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
CORPUS=${CORPUS:-corpus/demo}
RUN=${RUN:-runs/demo-model-v3}
EXP=${EXP:-runs/exp-speakers}
DB=${DB:-runs/demo-all}
SEED=${SEED:-0}
# the speaker of the committed sample calls and test fixtures stays out of training, so the
# demo shows a voice the model never heard
HOLD_OUT_SPEAKER=${HOLD_OUT_SPEAKER:-PS-LIBRIVOX}
MODEL_ID=${MODEL_ID:-nes2net-demo-logspec-v3}

if [ ! -f "$CORPUS/corpus.json" ]; then
  "$PY" -m nes2net_stream data build-demo "$CORPUS" --seed "$SEED" --jobs 2 --no-progress
fi
# train = the corpus's train and eval splits (every real speaker but dev's and the sample
# calls', every system); dev stays apart for epoch selection and calibration
if [ ! -f "$DB/corpus.json" ]; then
  "$PY" -m nes2net_stream data merge "$DB" --train "$CORPUS" --train "$CORPUS:eval" \
    --dev "$CORPUS" --exclude-speaker "$HOLD_OUT_SPEAKER"
fi

source scripts/demo_recipe.sh  # RECIPE, DISTILL, train_run

# a distilled model from three teachers (seeds 0-2; docs/training.md, "Distilling the three
# seeds into one model"): distilled run-dir, teacher run-dir prefix, database, model-id
distilled() {
  local teachers=()
  for t in 0 1 2; do
    train_run "$2-s$t" "$3" "$4-teacher-s$t" "$t"
    teachers+=(--teacher "$2-s$t/model")
  done
  train_run "$1" "$3" "$4" "$SEED" "${teachers[@]}" "${DISTILL[@]}"
}

distilled "$RUN" "$RUN-teacher" "$DB" "$MODEL_ID"

# two folds of the eval speakers (scripts/speaker_folds.py): fold f trains on train + half f
# and scores the other half; the halves' scores together cover the eval split once
HO="$RUN/held-out"
KEY="$CORPUS/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt"
CONDITIONS=("4s" "windows" "4s g726:16000" "4s g723_1" "4s opus_nb:8000")
for f in 0 1; do
  [ -f "$EXP/db-fold$f/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt" ] ||
    "$PY" scripts/speaker_folds.py "$CORPUS" "$EXP/db-fold$f" "$f"
  distilled "$EXP/D$f" "$EXP/B$f" "$EXP/db-fold$f" "exp-D$f"
done
rm -rf "$HO"
for cond in "${CONDITIONS[@]}"; do
  read -r mode channel <<<"$cond"
  name=$mode
  if [ -n "$channel" ]; then name="channel-${channel//:/-}"; fi
  for f in 0 1; do
    "$PY" -m nes2net_stream eval --model "$EXP/D$f/model" --database "$EXP/db-fold$f" \
      --split eval --mode "$mode" ${channel:+--channel "$channel"} --bootstrap 0 \
      --out "$HO/fold$f/eval-$name" > /dev/null
  done
  mkdir -p "$HO/eval-$name"
  cat "$HO/fold0/eval-$name/scores.txt" "$HO/fold1/eval-$name/scores.txt" \
    > "$HO/eval-$name/scores.txt"
  "$PY" -m nes2net_stream eval --scores "$HO/eval-$name/scores.txt" --key "$KEY" \
    ${channel:+--channel "$channel"} --out "$HO/eval-$name" > /dev/null
done
# whole calls: what the alert states say (one extra window before a first state and without)
for f in 0 1; do
  rm -rf "$HO/fold$f/calls"
  "$PY" -m nes2net_stream data build-calls "$EXP/db-fold$f" "$HO/fold$f/calls" --split eval
  "$PY" -m nes2net_stream eval-alerts --model "$EXP/D$f/model" --database "$HO/fold$f/calls" \
    --out "$HO/fold$f/alerts" --vary min_windows_for_state=1,2,3 --no-progress
done

"$PY" scripts/model_card.py --run "$RUN" --corpus "$CORPUS" --database "$DB" \
  --bundle "$RUN/model" --doc "$RUN/model-card.md" --held-out "$HO"
echo "model and its card: $RUN/model, $RUN/model-card.md"
