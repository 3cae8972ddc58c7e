#!/usr/bin/env bash
# One GPU session: the HF torch anchor, then our JAX twin (benchmarks/gpu_anchor.py) with the
# same shapes, each in its own process, then (time allowing) the fp32 model parity tests with
# JAX on the GPU. Everything is teed into $OUT/gpu_log.txt; the JSON lines into
# $OUT/gpu_results.jsonl.
#
# Device call (repo root; device/ holds the gin-config wheel and a copy of the anchor):
#   bash benchmarks/gpu_session.sh
# CPU dry run:
#   OUT=/tmp/gpu_dry PY=.venv/bin/python WHEELS=0 MODELS=tiny BATCH=2 SRC=32 TGT=16 \
#     NEW_TOKENS=8 STEPS=2 WARMUP=1 bash benchmarks/gpu_session.sh
set -uo pipefail

OUT=${OUT:-/tmp/gpu_session}
PY=${PY:-python3}
MODELS=${MODELS:-codet5p-220m,codet5p-770m}
BATCH=${BATCH:-32}
SRC=${SRC:-512}
TGT=${TGT:-256}
NEW_TOKENS=${NEW_TOKENS:-128}
STEPS=${STEPS:-20}
WARMUP=${WARMUP:-5}
ANCHOR=${ANCHOR:-1}
OURS_LIMIT_S=${OURS_LIMIT_S:-240}  # per model: init + 2 compiles (about 40 s each on an H200)
PARITY=${PARITY:-1}
PARITY_AFTER_S=${PARITY_AFTER_S:-400}  # skip the parity tests when the session is already late
RETRY_AFTER_S=${RETRY_AFTER_S:-450}  # ... and their full-precision rerun
mkdir -p "$OUT"
LOG=$OUT/gpu_log.txt
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3 TOKENIZERS_PARALLELISM=false

if [ "${WHEELS:-1}" = 1 ]; then
  # The device image lacks gin-config (pure Python): install the carried wheel.
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site device/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

step() {  # step <seconds> <command...>: run with a time limit, log start, end and status
  local limit=$1
  shift
  echo "=== $(date -u +%T) start: $*"
  timeout "$limit" "$@"
  local rc=$?
  echo "=== $(date -u +%T) rc=$rc after ${SECONDS}s: $*"
  return $rc
}

shapes=(--models "$MODELS" --batch "$BATCH" --src "$SRC" --tgt "$TGT" --new-tokens "$NEW_TOKENS"
  --gen-batch "$BATCH" --steps "$STEPS" --warmup "$WARMUP")
{
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  "$PY" -c "import sys, importlib.metadata as m, jax, flax, optax, torch, transformers, gin
print('python', sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__,
      'optax', optax.__version__, 'torch', torch.__version__, 'transformers',
      transformers.__version__, 'gin-config', m.version('gin-config'), jax.devices())"
  # Sequential processes: torch's caching allocator and JAX's pool never share the GPU.
  if [ "$ANCHOR" = 1 ]; then
    step 200 "$PY" device/hf_torch_anchor.py "${shapes[@]}"
  fi
  # One process per model: a slow compile or a failure costs only that model's lines, and
  # peak_mem_gib (the JAX allocator's process-wide peak) is that model's own.
  for model in ${MODELS//,/ }; do
    XLA_PYTHON_CLIENT_MEM_FRACTION=0.9 step "$OURS_LIMIT_S" \
      "$PY" benchmarks/gpu_anchor.py "${shapes[@]}" --models "$model"
  done
  if [ "$PARITY" = 1 ] && [ "$SECONDS" -lt "$PARITY_AFTER_S" ]; then
    # JAX on the GPU, torch reference on the CPU; default matmul precision first (TF32 may
    # apply to float32 dots), then, only if that fails, full float32 precision.
    parity=("$PY" -m pytest -q -n 0 -p no:cacheprovider --tb=short tests/networks/test_encdec_parity.py)
    if ! step 80 "${parity[@]}" && [ "$SECONDS" -lt "$RETRY_AFTER_S" ]; then
      JAX_DEFAULT_MATMUL_PRECISION=highest step 80 "${parity[@]}"
    fi
  else
    echo "=== parity tests skipped (PARITY=$PARITY, ${SECONDS}s elapsed)"
  fi
} 2>&1 | tee "$LOG"
grep '^{' "$LOG" >"$OUT/gpu_results.jsonl"
echo "=== done after ${SECONDS}s; $(wc -l <"$OUT/gpu_results.jsonl") JSON lines"
