#!/usr/bin/env bash
# On the GPU machine (issue #17's device checks), from the repository root, after
# `bash scripts/gpu_prepare.sh` here: the device tool's `run` with carry [".gpu"] and
#
#   bash scripts/gpu_check.sh tests      # tests/gpu                            (~3 min)
#   bash scripts/gpu_check.sh bench      # the GPU benchmarks, bf16 then fp32   (~6 min)
#   bash scripts/gpu_check.sh all        # both: near the 10-minute limit of one command
#
# Logs go to $OUT (what the tool brings back): tests_gpu.log, bench_generation.log,
# bench_ppo_bf16.log (generation=auto: static, compiled), bench_ppo_bf16_hf.log
# (generation=hf), bench_ppo_fp32.log, env.txt. Each step's output is also printed.
# Tested here only up to the point where it needs CUDA.
set -uo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
[ -d .gpu/whl ] || { echo "no .gpu/whl: run scripts/gpu_prepare.sh here and carry .gpu" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH="/tmp/site:$PWD" DS_ACCELERATOR=cuda RED_CACHE="$PWD/.gpu/red_cache" \
    TORCH_EXTENSIONS_DIR=/tmp/torch_extensions HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 \
    WANDB_MODE=disabled PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
{ nvidia-smi; python3 -c "import torch, transformers, deepspeed; print(torch.__version__, \
torch.version.cuda, transformers.__version__, deepspeed.__version__)"; } > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

step() {  # step LOG COMMAND...: run, print and keep the output; go on whatever happens
    local log=$1; shift
    echo "== $*"
    "$@" 2>&1 | tee "$OUT/$log"
    echo "== exit ${PIPESTATUS[0]}: $*"
}
if [ "$what" = tests ] || [ "$what" = all ]; then
    step tests_gpu.log python3 -m pytest -m gpu -q -p no:cacheprovider tests/gpu
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
    medium=(--models gpt2-medium --device cuda --modes sparse --rounds 3 --hbm-tbps 4.8)
    step bench_generation.log python3 scripts/bench_generation.py --model gpt2-medium \
        --device cuda --dtype bf16 --batch 64 --new-tokens 64 --rounds 6 --hbm-tbps 4.8
    step bench_ppo_bf16.log python3 scripts/bench_ppo.py "${medium[@]}" --dtype bf16 \
        --bf16-tflops 989
    step bench_ppo_bf16_hf.log python3 scripts/bench_ppo.py "${medium[@]}" --dtype bf16 \
        --bf16-tflops 989 --generation hf
    step bench_ppo_fp32.log python3 scripts/bench_ppo.py "${medium[@]}" --dtype fp32 \
        --fp32-tflops 67
fi
