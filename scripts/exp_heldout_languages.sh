#!/usr/bin/env bash
# Experiment: do more languages in training help on languages never trained on? Two language
# folds of the held-out corpus (`data build-heldout`, docs/corpus.md): fold A adds the Italian
# and Spanish voices to training and is tested on the French-Canadian and Russian ones, fold
# B the reverse. Each fold model trains on the demo corpus's train split plus its voices
# (a separate build, seed 1, train channel, PER utterances per voice) with their WORLD
# resyntheses and espeak-ng in their languages (H05, H06, H01; the festival systems H02-H04
# stay unseen), with the bundled model's recipe (RECIPE + SPEAKER of scripts/demo_recipe.sh)
# and the demo dev split for epoch choice and calibration. The folds' scores on the held-out
# corpus are pooled by language (scripts/pool_heldout_folds.py), so every trial is scored by a
# model that never heard a voice of its language.
#   SEEDS  seeds to run (default 0)        ONLY  one fold only (A or B)
#   PER    utterances per voice (default 80)
# Needs the held-out corpus in corpus/heldout (`make corpus-heldout`) and the Resemblyzer
# weights (`make corpus-extras`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CORPUS=${CORPUS:-corpus/demo}
HELDOUT=${HELDOUT:-corpus/heldout}
EXP=${EXP:-runs/exp-heldout}
SEEDS=${SEEDS:-0}
PER=${PER:-80}
source scripts/demo_recipe.sh  # RECIPE, SPEAKER, train_run
declare -A VOICES=([A]=CARLO,MENARDI,JULY [B]=JUNE,IVRVOICE-RU)
declare -A TEST_LANGS=([A]=fr,ru [B]=it,es)

for f in ${ONLY:-A B}; do
  if [ ! -f "$EXP/voices-$f/corpus.json" ]; then
    "$PY" -m nes2net_stream data build-heldout "$EXP/voices-$f" --seed 1 --per-speaker "$PER" \
      --speakers "${VOICES[$f]}" --systems H01,H05,H06 --channel train --jobs 1 --no-progress
  fi
  if [ ! -d "$EXP/db-$f" ]; then
    "$PY" -m nes2net_stream data merge "$EXP/db-$f" --train "$CORPUS" \
      --train "$EXP/voices-$f:eval" --dev "$CORPUS"
  fi
  for s in $SEEDS; do
    run="$EXP/L-$f-s$s"
    train_run "$run" "$EXP/db-$f" "exp-heldout-L-$f-s$s" "$s" "${SPEAKER[@]}"
    for mode in 4s windows; do
      [ -f "$run/heldout-$mode/scores.txt" ] ||
        "$PY" -m nes2net_stream eval --model "$run/model" --database "$HELDOUT" --split eval \
          --mode "$mode" --bootstrap 0 --out "$run/heldout-$mode" > /dev/null
    done
  done
done

key="$HELDOUT/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.eval.trl.txt"
for s in $SEEDS; do
  for mode in 4s windows; do
    [ -f "$EXP/L-A-s$s/heldout-$mode/scores.txt" ] &&
      [ -f "$EXP/L-B-s$s/heldout-$mode/scores.txt" ] || continue
    out="$EXP/L-s$s/heldout-$mode"
    "$PY" scripts/pool_heldout_folds.py "$HELDOUT" "$out/scores.txt" \
      "${TEST_LANGS[A]}=$EXP/L-A-s$s/heldout-$mode/scores.txt" \
      "${TEST_LANGS[B]}=$EXP/L-B-s$s/heldout-$mode/scores.txt"
    "$PY" -m nes2net_stream eval --scores "$out/scores.txt" --key "$key" --out "$out" > /dev/null
  done
done
