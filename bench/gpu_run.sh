#!/usr/bin/env bash
# The one prepared GPU run (issue 10): bench/cameras.py on CUDA and the @gpu tests, figures to $OUT.
# Needs the wheels of ../shared/GPU.md in the git-ignored .whl/ (carried with `run`), plus pytest, pluggy and
# iniconfig for the @gpu test; matplotlib is there already.
#   run(command="bash bench/gpu_run.sh", carry=[".whl"], timeout_s=540)
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site:$PWD YOLO_OFFLINE=1 PYTHONUNBUFFERED=1 || exit 1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
# FP32 and FP16, file sources at full speed (the synthetic line renders ~170 fps per core: too slow to feed a GPU)
timeout 200 python3 bench/cameras.py --kinds file --cameras 1,2,4,8 --rounds 2 --seconds 4 --out "$OUT/cameras-fp32" \
  > "$OUT/cameras-fp32.log" 2>&1
timeout 150 python3 bench/cameras.py --kinds file --cameras 1,8 --rounds 2 --seconds 4 --half --out "$OUT/cameras-fp16" \
  > "$OUT/cameras-fp16.log" 2>&1
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/pytest*.whl .whl/pluggy*.whl .whl/iniconfig*.whl \
  2>/dev/null
timeout 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests/detect/test_batching.py > "$OUT/pytest-gpu.log" 2>&1
tail -n 30 "$OUT"/cameras-fp32.md "$OUT"/cameras-fp16.md "$OUT/pytest-gpu.log"
