#!/usr/bin/env bash
# Experiment: a frozen pre-trained speaker encoder (GE2E LSTM) as the front-end instead of the
# log spectrum (docs/training.md, "A frozen speaker encoder as front-end"). Each variant is
# the demo recipe (scripts/demo_recipe.sh, no distillation) with --frontend speaker and:
#   S   the three LSTM layers mixed by learnt weights, the recipe's mean pooling
#   S2  layer 2 alone with attentive statistics pooling (what the linear probe read)
#   S3  S2 without augmentation (as the probe was trained)
#   S4  S2 with the smallest back-end (outer and inner ratio 2) and 100x the weight decay:
#       a screening run towards the linear probe (docs/training.md)
# Every run and the bundled model are scored on the eval split in the five conditions of the
# model card; `compare` then sets each variant's runs against the bundled model. Needs the
# Resemblyzer package's weights (`make corpus-extras`); about 14 minutes per training run on
# 2 cores. VARIANTS and SEEDS choose what runs (the documented runs: S seed 0; S2, S3 seeds 0-1;
# S4 seed 0); PROBE=0 skips the linear probe at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CORPUS=${CORPUS:-corpus/demo}
EXP=${EXP:-runs/exp-speaker-frontend}
VARIANTS=${VARIANTS:-"S S2 S3"}
SEEDS=${SEEDS:-"0 1"}
BUNDLED=${BUNDLED:-nes2net_stream/assets/demo-model}
source scripts/demo_recipe.sh  # RECIPE, train_run, CONDITIONS, eval_conditions

options() {  # variant -> extra train options
  case $1 in
    S) echo "--frontend speaker" ;;
    S2) echo "--frontend speaker --speaker-layer 2 --pooling astp" ;;
    S3) echo "--frontend speaker --speaker-layer 2 --pooling astp --no-augment" ;;
    S4) echo "${SPEAKER[*]}" ;;  # the bundled model's recipe since -ge2e-v3
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

eval_conditions "$BUNDLED" "$EXP/bundled" "$CORPUS"
KEY="$CORPUS/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt"
for v in $VARIANTS; do
  read -r -a extra <<<"$(options "$v")"
  for s in $SEEDS; do
    train_run "$EXP/$v-s$s" "$CORPUS" "exp-speaker-$v-s$s" "$s" "${extra[@]}"
    eval_conditions "$EXP/$v-s$s/model" "$EXP/$v-s$s" "$CORPUS"
  done
  for cond in "${CONDITIONS[@]}"; do
    read -r mode channel <<<"$cond"
    name="$mode${channel:+-${channel//:/-}}"
    runs=()
    for s in $SEEDS; do runs+=(-b "$EXP/$v-s$s/eval-$name/scores.txt"); done
    echo "== $v $name"
    "$PY" -m nes2net_stream compare --key "$KEY" -a "$EXP/bundled/eval-$name/scores.txt" \
      "${runs[@]}" --out "$EXP/compare-$v-$name.json"
  done
done

# the linear probe of the encoder's layers, every condition
[ "${PROBE:-1}" = 0 ] && exit 0
for channel in "" g723_1 g726:16000 opus_nb:8000; do
  OMP_NUM_THREADS=1 "$PY" scripts/probe_speaker_layers.py "$CORPUS" ${channel:+--channel "$channel"} \
    > "$EXP/probe-${channel:-none}.jsonl"
done
