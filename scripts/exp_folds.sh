#!/usr/bin/env bash
# Experiment: one recipe variant on the speaker folds of scripts/speaker_folds.py (as recipe B
# of scripts/exp_more_speakers.sh): each fold's model is trained on train plus one half of
# the eval speakers and scores the other half; the two halves' score files, pooled, cover the
# eval split once, every trial scored by a model that never heard its speaker.
#   NAME   run-directory prefix (default S4)
#   EXTRA  `train` options added to the demo recipe (default: SPEAKER, the bundled model's)
#   SEEDS  seeds to run (default 0)
#   CONDS  conditions to score (default the `4s` crop and speech `windows`)
#   ONLY   train and score one fold only (0 or 1, e.g. to run the folds in parallel); the
#          pooled files are written by a run that finds both folds scored
# Needs the Resemblyzer weights for --frontend speaker (`make corpus-extras`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CORPUS=${CORPUS:-corpus/demo}
EXP=${EXP:-runs/exp-folds}
FOLDS_DIR=${FOLDS_DIR:-runs/exp-speakers}
NAME=${NAME:-S4}
SEEDS=${SEEDS:-0}
source scripts/demo_recipe.sh  # RECIPE, SPEAKER, train_run, CONDITIONS, eval_conditions
EXTRA=${EXTRA:-"${SPEAKER[*]}"}
read -r -a CONDITIONS <<<"${CONDS:-}"
[ ${#CONDITIONS[@]} -gt 0 ] || CONDITIONS=("4s" "windows")
read -r -a extra <<<"$EXTRA"

for f in 0 1; do
  [ -f "$FOLDS_DIR/db-fold$f/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt" ] ||
    "$PY" scripts/speaker_folds.py "$CORPUS" "$FOLDS_DIR/db-fold$f" "$f"
done
for s in $SEEDS; do
  for f in ${ONLY:-0 1}; do
    run="$EXP/$NAME-fold$f-s$s"
    train_run "$run" "$FOLDS_DIR/db-fold$f" "exp-folds-$NAME-fold$f-s$s" "$s" "${extra[@]}"
    eval_conditions "$run/model" "$run" "$FOLDS_DIR/db-fold$f"
  done
  for mode in "${CONDITIONS[@]}"; do
    [ -f "$EXP/$NAME-fold0-s$s/eval-$mode/scores.txt" ] &&
      [ -f "$EXP/$NAME-fold1-s$s/eval-$mode/scores.txt" ] || continue
    mkdir -p "$EXP/$NAME-s$s/eval-$mode"
    cat "$EXP/$NAME-fold0-s$s/eval-$mode/scores.txt" "$EXP/$NAME-fold1-s$s/eval-$mode/scores.txt" \
      > "$EXP/$NAME-s$s/eval-$mode/scores.txt"
  done
done
