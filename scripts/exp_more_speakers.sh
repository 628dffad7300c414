#!/usr/bin/env bash
# Experiment: does training on more real speakers help on unseen ones? (docs/training.md)
# Recipe A: the demo recipe (without distillation) on the corpus's train split.
# Recipe B: the same recipe with half of the eval speakers added to train (two folds,
#   scripts/speaker_folds.py); each fold's model scores the other half, and the two halves'
#   scores together cover the whole eval split, every trial scored by a model that never
#   heard its speaker (nor its espeak-ng variant; A03 and A07 never trained on).
# Runs seeds 0-2 of each; about 11 minutes per training run on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CORPUS=${CORPUS:-corpus/demo}
EXP=${EXP:-runs/exp-speakers}
SEEDS=${SEEDS:-"0 1 2"}
source scripts/demo_recipe.sh  # RECIPE, DISTILL, train_run, CONDITIONS, eval_conditions

for f in 0 1; do
  [ -f "$EXP/db-fold$f/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt" ] ||
    "$PY" scripts/speaker_folds.py "$CORPUS" "$EXP/db-fold$f" "$f"
done

train() {  # run-dir database seed
  train_run "$1" "$2" "exp-$(basename "$1")" "$3"
}
evaluate() {  # run-dir database
  eval_conditions "$1/model" "$1" "$2"
}

for s in $SEEDS; do
  train "$EXP/A-s$s" "$CORPUS" "$s"; evaluate "$EXP/A-s$s" "$CORPUS"
  for f in 0 1; do
    train "$EXP/B$f-s$s" "$EXP/db-fold$f" "$s"; evaluate "$EXP/B$f-s$s" "$EXP/db-fold$f"
  done
  for cond in "${CONDITIONS[@]}"; do
    read -r mode channel <<<"$cond"
    name="$mode${channel:+-${channel//:/-}}"
    mkdir -p "$EXP/B-s$s/eval-$name"
    cat "$EXP/B0-s$s/eval-$name/scores.txt" "$EXP/B1-s$s/eval-$name/scores.txt" \
      > "$EXP/B-s$s/eval-$name/scores.txt"
  done
done

KEY="$CORPUS/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt"
for cond in "${CONDITIONS[@]}"; do
  read -r mode channel <<<"$cond"
  name="$mode${channel:+-${channel//:/-}}"
  A=(); B=()
  for s in $SEEDS; do A+=(-a "$EXP/A-s$s/eval-$name/scores.txt"); B+=(-b "$EXP/B-s$s/eval-$name/scores.txt"); done
  echo "== $name"
  "$PY" -m nes2net_stream compare --key "$KEY" "${A[@]}" "${B[@]}" --out "$EXP/compare-$name.json"
done
