#!/usr/bin/env bash
# Prepared runs on a lent GPU machine (a session has about 15 minutes of device time in all,
# machine start included, and at most 10 minutes per command):
#   bash benchmarks/gpu_run.sh          everything below in one command, most decisive first,
#                                       each step bounded by what is left of BUDGET_S (570 s):
#                                       CUDA correctness tests, the streaming engine (feature
#                                       cache, service defaults, compiled back-end), the service
#                                       end to end at 2,500 calls, the bucket/graph/per-stage
#                                       benchmark, the back-end alone, the ingest channel
#   bash benchmarks/gpu_run.sh engine   the engine steps only
#   bash benchmarks/gpu_run.sh e2e      the service end to end with multi-process ingest, then
#                                       the ingest-to-scorer channel alone on that host
#   bash benchmarks/gpu_run.sh layers   a shorter follow-up (about 6 minutes): the fused
#                                       transformer layers and the compiled back-end against the
#                                       previous defaults (CUDA tests, per-stage timings, the
#                                       streaming engine at batch 256), the service end to end,
#                                       then a profile of one streaming batch
#   bash benchmarks/gpu_run.sh norms    the compiled norm kernels ([engine] compile_norms)
#                                       alone and beside the compiled back-end, against the
#                                       current defaults (about 8 minutes): CUDA tests, the
#                                       streaming engine at batch 256, per-stage timings, the
#                                       service end to end with compile_norms on, the profile,
#                                       the host time of staging whole windows vs cached tails
# SMOKE=1 rehearses a stage on a machine without a GPU (tests): every benchmark with --smoke
# (tiny models on the CPU), no CUDA tests, no wheels, the installed redis-server.
# Expects the Python wheels the image lacks in .whl/ and the Debian packages of redis-server in
# .debs/ (see docs/benchmarks.md); writes JSON (and each benchmark's progress log, so a step cut
# short still reports the rows it finished) into $OUT, packed at the end into $OUT/run.tgz
# beside $OUT/summary.md (PACK=0 leaves them loose).
set -uo pipefail
export PYTHONUNBUFFERED=1
STAGE=${1:-all}
OUT=${OUT:-/tmp/out}
BUDGET_S=${BUDGET_S:-570}
SMOKE=${SMOKE:-0}
SM=()
[[ $SMOKE == 1 ]] && SM=(--smoke)
START=$SECONDS
mkdir -p "$OUT"

# step NAME CAP_S CMD...: run CMD with a timeout of CAP_S or what is left of the budget
step() {
  local name=$1 cap=$2
  shift 2
  local left=$((BUDGET_S - (SECONDS - START)))
  local limit=$((cap < left ? cap : left))
  if ((left < 20)); then
    echo "skipped $name: ${left}s of the budget left" | tee -a "$OUT/steps.txt"
    return
  fi
  if [[ $SMOKE == 1 && $name == cuda_tests ]]; then
    echo "skipped $name: smoke run" | tee -a "$OUT/steps.txt"
    return
  fi
  local t0=$SECONDS
  timeout "$limit" "$@" &> "$OUT/$name.log"
  echo "$name: exit $? after $((SECONDS - t0))s (limit ${limit}s)" | tee -a "$OUT/steps.txt"
  tail -3 "$OUT/$name.log"
}

# the bundled demo model (GE2E LSTM front-end) on CUDA as the service runs it, against the CPU
DEMO_CUDA_TEST=tests/test_speaker_frontend.py::test_bundled_model_on_cuda_in_bf16_matches_the_cpu

cuda_tests() {
  step cuda_tests 80 python3 -m pytest -q -p no:cacheprovider tests/test_engine.py \
    tests/test_engine_pipeline.py tests/test_feature_cache.py tests/test_checkpoints.py \
    tests/test_conv_gemm.py tests/test_pos_conv_fft.py "$DEMO_CUDA_TEST"
}

# the engine with the feature cache: the best earlier configuration, the service's defaults,
# the positional convolution through FFTs, without the cache, the compiled back-end last (its
# compile time; uncached always runs first as the reference), then the whole engine
feature_cache() {
  step feature_cache 190 python3 benchmarks/feature_cache_bench.py "${SM[@]}" --batch-sizes 128,256 \
    --steps 8 --out "$OUT/feature_cache.json" --configs \
    cached,cached_backend_graph_bf16_weights_gemm_conv,cached_backend_graph_bf16_weights_gemm_conv_fft_pos,uncached_backend_graph_bf16_weights_gemm_conv,cached_backend_graph_bf16_weights_gemm_conv_compiled
}

engine_modes() {
  step engine 130 python3 benchmarks/gpu_engine_bench.py "${SM[@]}" --batch-sizes 1,32,128,192,256 \
    --min-time-s 0.7 --out "$OUT/engine.json" --modes \
    cuda_graph_bucket_bf16_weights,cuda_graph_bucket_bf16_weights_gemm_conv,cuda_graph_bucket_bf16_weights_gemm_conv_fft_pos,cuda_graph_all_buckets_bf16_weights_gemm_conv
}

backend() {
  step backend 80 python3 benchmarks/backend_bench.py "${SM[@]}" --batch-sizes 128,256 --min-time-s 0.5 \
    --out "$OUT/backend.json"
}

e2e_calls() {
  if [[ $SMOKE != 1 ]]; then
    mkdir -p /tmp/redis && for f in .debs/*.deb; do dpkg -x "$f" /tmp/redis; done
    ln -sf /tmp/redis/usr/bin/redis-check-rdb /tmp/redis/usr/bin/redis-server
    export PATH=/tmp/redis/usr/bin:$PATH
    export LD_LIBRARY_PATH=/tmp/redis/usr/lib/x86_64-linux-gnu:/tmp/redis/lib/x86_64-linux-gnu
  fi
  redis-server --version || ldd /tmp/redis/usr/bin/redis-check-rdb
  local extra=() setting
  # E2E_ENV: space-separated NAME=VALUE settings for the service
  for setting in ${E2E_ENV:-}; do extra+=(--service-env "$setting"); done
  [[ ${E2E_SPEECH_ONLY:-0} == 1 ]] && extra+=(--speech-only)
  step e2e "${E2E_CAP_S:-200}" python3 benchmarks/gpu_e2e.py "${SM[@]}" --calls "${E2E_CALLS:-2500}" \
    --duration-s "${E2E_DURATION_S:-15}" \
    --workers 10 --client-procs 6 --out "$OUT/e2e_workers.json" "${extra[@]}"
}

# the follow-up: fused transformer layers ([engine] encoder_layers) and the compiled back-end
layers_tests() {
  step cuda_tests 50 python3 -m pytest -q -p no:cacheprovider tests/test_fused_layers.py \
    tests/test_engine.py tests/test_engine_pipeline.py tests/test_feature_cache.py \
    tests/test_pos_conv_fft.py
}

layers_stages() {
  step engine 50 python3 benchmarks/gpu_engine_bench.py "${SM[@]}" --stages-only --batch-sizes 128,256 \
    --min-time-s 0.5 --out "$OUT/engine.json"
}

layers_engine() {
  local base=cached_backend_graph_bf16_weights_gemm_conv_fft_pos
  step feature_cache 170 python3 benchmarks/feature_cache_bench.py "${SM[@]}" --batch-sizes 256 \
    --steps 8 --out "$OUT/feature_cache.json" \
    --configs "$base,${base}_fused_layers,${base}_fused_layers_compiled" \
    --engine-columns engine_pipelined,engine_pipelined_native_layers,engine_pipelined_compiled
}

profile_batch() {
  step profile "${PROFILE_CAP_S:-30}" python3 benchmarks/profile_engine.py "${SM[@]}" --batch 256 \
    --out "$OUT/profile.json" "$@"
}

# the follow-up: compiled norm kernels ([engine] compile_norms), the decisive engine columns
# first (the compiled back-end's static compilation per bucket makes its columns' warm-up long)
norms_tests() {
  step cuda_tests 60 python3 -m pytest -q -p no:cacheprovider tests/test_fused_norms.py \
    tests/test_conv_gemm.py tests/test_fused_layers.py tests/test_feature_cache.py \
    tests/test_pos_conv_fft.py tests/test_engine_pipeline.py tests/test_service_exit.py \
    "$DEMO_CUDA_TEST"
}

norms_engine() {
  local base=cached_backend_graph_bf16_weights_gemm_conv_fft_pos_fused_layers
  # 16 hops per stream: the 2 % decisions need more than 8 batches per engine column
  step feature_cache 240 python3 benchmarks/feature_cache_bench.py "${SM[@]}" --batch-sizes 256 \
    --steps 16 --out "$OUT/feature_cache.json" --configs "$base,${base}_compiled_norms" \
    --engine-columns engine_pipelined,engine_pipelined_compiled_norms,engine_pipelined_one_stream,engine_pipelined_compiled_all,engine_pipelined_compiled
}

norms_stages() {
  step engine 45 python3 benchmarks/gpu_engine_bench.py "${SM[@]}" --stages-only --batch-sizes 256 \
    --min-time-s 0.4 --out "$OUT/engine.json"
}

staging() {
  step staging 20 python3 benchmarks/staging_bench.py "${SM[@]}" --out "$OUT/staging.json"
}

channel() {
  step ingest_channel 40 python3 benchmarks/ingest_channel_bench.py "${SM[@]}" --rates 2000,4000 \
    --busy-threads 0,1 --busy-duty 0.2,1.0 --seconds 3 --out "$OUT/ingest_channel.json"
}

if [[ $SMOKE != 1 ]]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
fi
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
case "$STAGE" in
  all) cuda_tests; feature_cache; e2e_calls; engine_modes; backend; channel ;;
  engine) cuda_tests; feature_cache; engine_modes; backend ;;
  e2e) e2e_calls; channel ;;
  layers) layers_tests; layers_stages; layers_engine; E2E_CAP_S=85 E2E_DURATION_S=20 e2e_calls
    profile_batch ;;
  norms) norms_tests; norms_engine; norms_stages
    # the service compiles the norm kernels during its warm-up: more time than the 85 s before;
    # with the alert journal on, as the container configurations run it
    journal=$(mktemp -d "${TMPDIR:-/tmp}/nes2net-e2e-journal-XXXXXX")
    E2E_CAP_S=130 E2E_DURATION_S=20 \
      E2E_ENV="NES2NET_ENGINE__COMPILE_NORMS=true NES2NET_REDIS__ALERT_JOURNAL_DIR=$journal" \
      e2e_calls
    # the profile compiles the norm kernels first (about 20-40 s), then pipelined batches too
    PROFILE_CAP_S=60 profile_batch --compile-norms; staging ;;
  *) echo "unknown stage $STAGE (all, engine, e2e, layers or norms)"; exit 2 ;;
esac
python3 benchmarks/summarize_gpu_run.py "$OUT" > "$OUT/summary.md" && cat "$OUT/summary.md"
ls -la "$OUT"
# the device tool returns at most 8 files: pack every log and JSON into one archive beside the
# summary (unpack with: tar xzf run.tgz)
if [[ ${PACK:-1} == 1 ]]; then
  tar czf /tmp/run.tgz -C "$OUT" --exclude summary.md . && \
    find "$OUT" -mindepth 1 ! -name summary.md -delete && mv /tmp/run.tgz "$OUT/run.tgz"
fi
