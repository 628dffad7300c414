#!/usr/bin/env bash
# One prepared run on a lent GPU machine: CUDA correctness tests, then the engine, checkpoint
# and end-to-end benchmarks. Expects the Python wheels the image lacks in .whl/ and the Debian
# packages of redis-server in .debs/ (see docs/benchmarks.md); writes JSON into $OUT.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/redis && for f in .debs/*.deb; do dpkg -x "$f" /tmp/redis; done
ln -sf /tmp/redis/usr/bin/redis-check-rdb /tmp/redis/usr/bin/redis-server
export PATH=/tmp/redis/usr/bin:$PATH
export LD_LIBRARY_PATH=/tmp/redis/usr/lib/x86_64-linux-gnu:/tmp/redis/lib/x86_64-linux-gnu
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
redis-server --version || ldd /tmp/redis/usr/bin/redis-check-rdb
python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_engine.py \
  tests/test_checkpoints.py 2>&1 | tail -5 | tee "$OUT/cuda_tests.txt"
timeout 150 python3 benchmarks/gpu_engine_bench.py --min-time-s 1 --out "$OUT/engine.json" \
  > /dev/null
timeout 120 python3 benchmarks/gpu_checkpoint_bench.py --min-time-s 1 \
  --out "$OUT/checkpoint.json" > /dev/null
timeout 240 python3 benchmarks/gpu_e2e.py --calls 250,1000,2500 --duration-s 15 \
  --client-procs 8 --out "$OUT/e2e.json" > /dev/null
ls -la "$OUT"
