#!/usr/bin/env bash
# Every GPU figure of experiments/README.md ("GPU run") in one call, most important first.
#
#   OUT=/tmp/gpu OFFICIAL=/path/to/APTPose bash experiments/gpu_run.sh
#
# Each part writes its JSON lines to <part>.jsonl (stderr to <part>.err) in $WORK under its own
# time limit, so a part that fails or runs long costs only itself; after each part $WORK is packed
# into $OUT/parts.tgz (one file: it comes back even if the call is cut short), and
# experiments/gpu_table.py prints the short table last. Sizes are the default Stage II config (F=243, 4 layers, C 256, H 512) unless
# SMOKE=1, which shrinks everything to run on a CPU in a few minutes (the script's own test).
set -u
OUT=${OUT:-/tmp/aptpose_gpu_run}
WORK=${WORK:-/tmp/aptpose_gpu_parts}
OFFICIAL=${OFFICIAL:-.official}
PY=${PY:-python3}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/aptpose_gpu_jit}
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0

if [ "${SMOKE:-0}" = 1 ]; then
  SIZE="--frames 27 --layers 2 --channel 32 --d_hid 64"
  DATA="--frames_per_sequence 300 --subjects_train S1 --data_root data/demo_bench_smoke"
  BIG=16; SMALL=8; STEPS=2; ATT="--batch 2 --frames 27 --steps 2"; LIMIT=900
  REF="--frames 27 --layers 2 --channel 32 --d_hid 64 --steps 2 --warmup 1"
  PLATFORM=cpu
else
  SIZE=""
  DATA="--frames_per_sequence 3000 --subjects_train S1,S5"
  BIG=1024; SMALL=160; STEPS=5; ATT="--batch 1024 --steps 10"; LIMIT=90
  REF="--steps 5 --warmup 2"
  PLATFORM=cuda
fi
TRAIN="$PY experiments/bench_train.py --stages finetune $SIZE $DATA --steps $STEPS --warmup 2"

part() {  # part NAME LIMIT_S COMMAND...: run one part, record its exit status and time
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$WORK/$name.jsonl" 2>"$WORK/$name.err"
  echo "$name rc=$? ${limit}s-limit took=$((SECONDS - t0))s" | tee -a "$WORK/status.txt"
  tar -czf "$OUT/parts.tgz" -C "$WORK" .
}

{ date -u; nvidia-smi --query-gpu=name,memory.total,clocks.sm,driver_version --format=csv \
  2>/dev/null; $PY -c "import jax; print(jax.__version__, jax.devices())"; git log -1 --oneline \
  2>/dev/null; } >"$WORK/machine.txt" 2>&1

# 1. Stage II bf16 training + flip-TTA evaluation at B=1024: XLA attention vs the fused kernel.
part train_bf16 $((3 * LIMIT)) $TRAIN --batches $BIG --dtypes bfloat16 --attentions xla,pallas
# 2. The official code, eager, same sizes, B=160 (its recipe) and B=1024.
part official $LIMIT $PY experiments/bench_reference.py --official "$OFFICIAL" $SIZE $REF \
  --batches $SMALL,$BIG --dtypes float32,bfloat16 --impls eager
# 3. fp32 parity with the official code on the GPU (true fp32), and the fused kernel vs XLA.
part parity $((LIMIT + LIMIT / 2)) env JAX_PLATFORMS=$PLATFORM $PY -m pytest -q -n 0 \
  -p no:cacheprovider tests/test_parity.py tests/test_attention.py -k "not shard"
# 4. Ours at B=160 (the official recipe's batch).
part train_b160 $LIMIT $TRAIN --batches $SMALL --dtypes bfloat16
# 5. The attention kernels alone (correctness vs XLA, time, live memory vs one (B,8,T,T) tensor).
part attention $LIMIT $PY experiments/bench_attention.py $ATT --dtypes bf16,fp32
# 6. fp32 (HIGHEST) and TF32; threefry dropout; the cost of --config.deterministic=True.
part train_fp32 $LIMIT $TRAIN --batches $BIG --dtypes float32,tf32 --modes train
part dropout $LIMIT $TRAIN --batches $BIG --dtypes bfloat16 --dropouts threefry --modes train
part deterministic $LIMIT $TRAIN --batches $BIG --dtypes bfloat16 --modes train --deterministic
# 7. The official code under torch.compile (slow to compile: last).
part official_compile $LIMIT $PY experiments/bench_reference.py --official "$OFFICIAL" $SIZE \
  $REF --batches $BIG --dtypes bfloat16 --impls compile --modes train

$PY experiments/gpu_table.py "$WORK"
