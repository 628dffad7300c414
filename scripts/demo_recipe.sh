# The bundled demo model's training recipe, sourced by scripts/build_demo_model.sh and the
# experiments that compare against it (scripts/exp_*.sh), so that all of them train the same.
# RECIPE: the `train` options of one run; DISTILL: what the distilled model (up to -v2) added
# to them (with one --teacher per teacher bundle); SPEAKER: what the bundled model adds to them
# (docs/training.md).
# shellcheck disable=SC2034  # used by the scripts that source this file
RECIPE=(--augment-config scripts/demo_augment.json
  --spectral-kind logspec --n-features 256 --n-fft 1024 --win-length 512
  --outer-ratio 4 --inner-ratio 8 --se-ratio 2 --balance --class-weights 0.5 0.5
  --epochs 18 --batch-size 32 --lr 2e-3 --average-best 5 --num-workers 2 --no-progress)
# shellcheck disable=SC2034
DISTILL=(--distill-weight 0.5 --distill-temperature 2.0)
# SPEAKER: what the bundled model (since nes2net-demo-ge2e-v3) adds to RECIPE: the frozen GE2E
# speaker encoder's second layer as front-end, the smallest Nes2Net-X with attentive statistics
# pooling and strong weight decay (variant S4 of scripts/exp_speaker_frontend.sh; training.md)
# shellcheck disable=SC2034
SPEAKER=(--frontend speaker --speaker-layer 2 --pooling astp --outer-ratio 2 --inner-ratio 2
  --weight-decay 0.01)

# train_run RUN-DIR DATABASE MODEL-ID SEED [more train options, e.g. --teacher ...]: one run
# of the recipe with "$PY", skipped when RUN-DIR already holds its model
train_run() {
  local run=$1 db=$2 id=$3 seed=$4
  shift 4
  [ -f "$run/model/config.json" ] || "$PY" -m nes2net_stream train --database "$db" \
    --run-dir "$run" --out "$run/model" --model-id "$id" "${RECIPE[@]}" --seed "$seed" "$@"
}

# The five conditions of the model card: the official 4-second crop, speech windows as the
# service scores, and the crop through three codecs never used in training.
# shellcheck disable=SC2034
CONDITIONS=("4s" "windows" "4s g723_1" "4s g726:16000" "4s opus_nb:8000")

# eval_conditions MODEL-DIR OUT-DIR DATABASE: score the eval split in every condition into
# OUT-DIR/eval-<condition>/ with "$PY", skipping conditions already scored
eval_conditions() {
  local model=$1 out=$2 db=$3 cond mode channel name
  for cond in "${CONDITIONS[@]}"; do
    read -r mode channel <<<"$cond"
    name="$mode${channel:+-${channel//:/-}}"
    [ -f "$out/eval-$name/scores.txt" ] && continue
    "$PY" -m nes2net_stream eval --model "$model" --database "$db" --split eval --mode "$mode" \
      ${channel:+--channel "$channel"} --bootstrap 0 --out "$out/eval-$name" > /dev/null
  done
}
