#!/usr/bin/env bash
# Prepared runs on a lent GPU machine, in two stages of under 10 minutes each:
#   bash benchmarks/gpu_run.sh engine   CUDA correctness tests, then the engine ablation
#                                       (feature cache, back-end graphs, bf16 weights, GEMM
#                                       conv encoder, pipelining) and the bucket/graph benchmark
#   bash benchmarks/gpu_run.sh e2e      the ingest-to-scorer channel alone, then the service end
#                                       to end with multi-process ingest
# Expects the Python wheels the image lacks in .whl/ and the Debian packages of redis-server in
# .debs/ (see docs/benchmarks.md); writes JSON into $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
STAGE=${1:-engine}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
case "$STAGE" in
  engine)
    timeout 100 python3 -m pytest -q -p no:cacheprovider tests/test_engine.py \
      tests/test_engine_pipeline.py tests/test_feature_cache.py tests/test_checkpoints.py \
      tests/test_conv_gemm.py \
      2>&1 | tail -5 | tee "$OUT/cuda_tests.txt"
    timeout 250 python3 benchmarks/feature_cache_bench.py --batch-sizes 128,256 \
      --out "$OUT/feature_cache.json" > /dev/null
    timeout 180 python3 benchmarks/gpu_engine_bench.py --batch-sizes 1,8,32,128,256 \
      --min-time-s 1 --out "$OUT/engine.json" > /dev/null
    ;;
  e2e)
    mkdir -p /tmp/redis && for f in .debs/*.deb; do dpkg -x "$f" /tmp/redis; done
    ln -sf /tmp/redis/usr/bin/redis-check-rdb /tmp/redis/usr/bin/redis-server
    export PATH=/tmp/redis/usr/bin:$PATH
    export LD_LIBRARY_PATH=/tmp/redis/usr/lib/x86_64-linux-gnu:/tmp/redis/lib/x86_64-linux-gnu
    redis-server --version || ldd /tmp/redis/usr/bin/redis-check-rdb
    timeout 90 python3 benchmarks/ingest_channel_bench.py --rates 1000,2000,4000 \
      --busy-threads 0,1 --seconds 5 --out "$OUT/ingest_channel.json" > /dev/null
    timeout 450 python3 benchmarks/gpu_e2e.py --calls 1000,2500 --duration-s 15 \
      --workers 10 --client-procs 6 --out "$OUT/e2e_workers.json" > /dev/null
    ;;
  *) echo "unknown stage $STAGE (engine or e2e)"; exit 2 ;;
esac
ls -la "$OUT"
