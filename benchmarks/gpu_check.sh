#!/usr/bin/env bash
# The GPU checks in one script, for a lent GPU's few minutes (issue: GPU path; docs/performance.md, GPU rows):
#   1. install what the GPU machine lacks from wheels carried in .whl/ (it has torch 2.11 and transformers 5.17 and no
#      network; igpt needs transformers >= 5.24): `pip download --no-deps ... -d .whl transformers==5.24.0` beforehand;
#   2. tests/test_gpu.py (CUDA-graph decoding, transformers' compiled static cache, compiled training, bf16 + fused AdamW);
#   3. the model benchmark against transformers' ImageGPT: training at S and L, sampling at S; each part in its own
#      process under its own time limit, each writing its own JSON, so one failure or overrun costs only itself;
#   4. benchmarks/profile_decode.py: where a decode step's time goes, and training S under each SDPA backend.
# Writes under $OUT (default /tmp/gpu_check): machine.json, bench_*.json and gpu_check.log (every step's output).
# Measured on one H200: about 3.5 minutes for steps 1-3 (docs/performance.md).
#
#   bash benchmarks/gpu_check.sh                  # on the GPU machine
#   bash benchmarks/gpu_check.sh --device cpu     # rehearsal on a CPU: same steps, tiny sizes (--quick), no GPU tests' graphs
set -u
DEVICE=cuda
if [ "${1:-}" = "--device" ]; then DEVICE=$2; fi
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

if ls .whl/*.whl >/dev/null 2>&1; then
    $PYTHON -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/igpt_site .whl/*.whl \
        || { echo "wheel install failed"; exit 1; }
    export PYTHONPATH=/tmp/igpt_site:$PWD
else
    export PYTHONPATH=$PWD
fi

$PYTHON - "$OUT/machine.json" <<'PY'
import json, platform, subprocess, sys
import torch, transformers
driver = None
try:
    driver = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                            capture_output=True, text=True, timeout=20).stdout.strip()
except (OSError, subprocess.TimeoutExpired):
    pass
info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
        "transformers": transformers.__version__, "nvidia_smi": driver, "cpu_count": __import__("os").cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
print(json.dumps(info, indent=2))
open(sys.argv[1], "w").write(json.dumps(info, indent=2))
PY

step() {  # step NAME SECONDS COMMAND...: run under a time limit, append its output to $OUT/gpu_check.log
    local name=$1 limit=$2; shift 2
    local begin=$SECONDS
    timeout --signal=INT --kill-after=15 "$limit" "$@" > "$OUT/step.log" 2>&1
    local status=$?
    { echo "== $name: exit $status in $((SECONDS - begin)) s (limit $limit s)"; cat "$OUT/step.log"; } >> "$OUT/gpu_check.log"
    rm "$OUT/step.log"
    echo "== $name: exit $status in $((SECONDS - begin)) s (limit $limit s)"
}

if [ "$DEVICE" = cuda ]; then
    TEST_ENV=() ; SIZE=() ; SHAPES_TRAIN=(S L) ; SHAPE_SAMPLE=S
else
    TEST_ENV=(env IGPT_GPU_TEST_DEVICE=cpu) ; SIZE=(--quick) ; SHAPES_TRAIN=(S) ; SHAPE_SAMPLE=S
fi
step tests "${TEST_LIMIT:-100}" "${TEST_ENV[@]}" $PYTHON -m pytest -q -p no:cacheprovider tests/test_gpu.py
for shape in "${SHAPES_TRAIN[@]}"; do
    step "bench_train_$shape" "${TRAIN_LIMIT:-130}" $PYTHON benchmarks/bench_model.py --device "$DEVICE" "${SIZE[@]}" \
        --shapes "$shape" --jobs training --json "$OUT/bench_train_$shape.json"
done
step "bench_sample_$SHAPE_SAMPLE" "${SAMPLE_LIMIT:-140}" $PYTHON benchmarks/bench_model.py --device "$DEVICE" \
    "${SIZE[@]}" --shapes "$SHAPE_SAMPLE" --jobs sampling --json "$OUT/bench_sample_$SHAPE_SAMPLE.json"
if [ "$DEVICE" = cuda ]; then
    step profile_decode "${PROFILE_LIMIT:-150}" $PYTHON benchmarks/profile_decode.py --train
fi
grep -v "^\s*File \|^\s*\^\|~~~" "$OUT/gpu_check.log" | tail -c 11000
echo "== done; files in $OUT"
