#!/usr/bin/env bash
# The GPU measurements recorded in BENCHMARKS.md, as run on a lent GPU machine (torch preinstalled
# there, no package registry: the other wheels travel in .whl/, see BENCHMARKS.md "GPU").
#
#   bash scripts/gpu_check.sh check          # CUDA equivalence tests, a short CUDA-graphed run, learner
#                                            # phase and collection benchmarks (about 5 minutes)
#   bash scripts/gpu_check.sh run [k=v ...]  # one 1M-frame HalfCheetah-v5 run with device=cuda optim.cudagraphs=true
#
# Results go to $OUT (default outputs/gpu).
set -uo pipefail
mode=${1:-check}
shift || true
OUT=${OUT:-outputs/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
python3 -c "import torch, torchrl, tensordict; print('torch', torch.__version__, '| torchrl', torchrl.__version__,
'| tensordict', tensordict.__version__, '|', torch.cuda.get_device_name(), '|', __import__('os').cpu_count(), 'CPUs')" \
    | tee "$OUT/machine.txt"

if [ "$mode" = check ]; then
    echo "== short CUDA-graphed run"
    timeout 150 python3 scripts/train_mujoco.py device=cuda optim.cudagraphs=true env.num_envs=16 \
        collector.total_frames=8192 eval.interval=2 checkpoint.interval=2 logger.backend=csv \
        output_dir=/tmp/smoke >"$OUT/smoke.log" 2>&1
    echo "smoke exit $?"; tail -c 600 "$OUT/smoke.log"; echo
    echo "== equivalence tests on CUDA"
    timeout 200 python3 -m pytest -q -p no:cacheprovider --tb=short tests/test_hooks.py \
        -k "compiled or cuda or regression or sync" >"$OUT/tests.txt" 2>&1
    grep -E "^(FAILED|ERROR|E  )|passed|failed" "$OUT/tests.txt" | head -n 40
    echo "== learner phase"
    timeout 200 python3 scripts/benchmark.py --sections learner --repeats 3 --compile device=cuda \
        --json "$OUT/learner.json" >"$OUT/learner.log" 2>&1 || tail -n 20 "$OUT/learner.log"
    grep -E "^\| learner" "$OUT/learner.log"
    echo "== collection"
    for cfg in "env.num_envs=32" "collector.backend=multi collector.num_workers=8 env.num_envs=8" \
               "collector.backend=multi collector.num_workers=16 env.num_envs=8"; do
        echo "-- $cfg"
        # shellcheck disable=SC2086
        timeout 120 python3 scripts/benchmark.py --sections collection --repeats 3 --collect-batches 4 $cfg \
            --json "$OUT/collection_$(echo "$cfg" | tr -c 'a-z0-9' '_' | cut -c1-60).json" 2>&1 \
            | grep -E "^\| collection" | head -n 1
    done
else
    echo "== 1M-frame run: $*"
    # shellcheck disable=SC2068
    timeout 560 python3 scripts/train_mujoco.py device=cuda optim.cudagraphs=true logger.backend=csv \
        output_dir=/tmp/run $@ >"$OUT/run.log" 2>&1
    echo "run exit $?"
    tr '\r' '\n' <"$OUT/run.log" | tail -n 3
    cp /tmp/run/eval.csv /tmp/run/config.yaml "$OUT"/ 2>/dev/null
    cp /tmp/run/summary.json "$OUT"/ 2>/dev/null && cat "$OUT/summary.json"
fi
