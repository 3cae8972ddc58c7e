#!/usr/bin/env bash
# One GPU session: the HF torch anchor (eager and torch.compile) and our JAX side
# (benchmarks/bench.py) at the anchor's shapes for codet5p-220m and codet5p-770m, then (time
# allowing) the float32 parity tests with JAX on the GPU. Every step is its own process with
# its own time limit, clipped so that the whole session ends BUDGET_S seconds after it started
# (a step that no longer fits its minimum is skipped with a line saying so). Everything is teed
# into $OUT/gpu_log.txt, the JSON lines into $OUT/gpu_results.jsonl; each step ends with a
# {"step": ..., "rc": ..., "wall_s": ...} line (rc 124: killed at its limit). Anchor processes
# report no compile time of their own; a step's wall_s includes it.
#
# Device call (repo root; device/ holds the gin-config wheel and a copy of the anchor), with a
# call timeout of at least BUDGET_S + 30:
#   bash benchmarks/gpu_session.sh
# CPU dry run (tiny shapes, one model):
#   OUT=/tmp/gpu_dry PY=.venv/bin/python WHEELS=0 MODELS=tiny BATCH=2 SRC=32 TGT=16 \
#     NEW_TOKENS=8 STEPS=2 WARMUP=1 BUDGET_S=400 bash benchmarks/gpu_session.sh
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
BUDGET_S=${BUDGET_S:-420}  # the whole session, every step included
# Steps in the order they run; ":1" / ":2" is the first / second entry of MODELS. Our side of
# each model first, then the anchor eager (cheap), then torch.compile (slow to compile).
ORDER=${ORDER:-gpu-check ours-train:1 anchor-eager:1 ours-gen:1 ours-train:2 ours-gen:2
anchor-eager:2 anchor-compile-train:1 anchor-compile-train:2 anchor-compile-gen:1 parity}
BENCH_ARGS=${BENCH_ARGS:-}  # extra bench.py arguments, e.g. "--attention plain"
# Loss chunk (positions) per MODELS entry, 0 = whole logits. Chunking recomputes the float32
# LM head in the backward pass: about 5 % of a 220m step, 1 % of a 770m one, whose memory
# target (<= 0.8x torch.compile's peak) it serves.
LOSS_CHUNK_1=${LOSS_CHUNK_1:-0}
LOSS_CHUNK_2=${LOSS_CHUNK_2:-2048}
mkdir -p "$OUT"
LOG=$OUT/gpu_log.txt
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3 TOKENIZERS_PARALLELISM=false
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}

if [ "${WHEELS:-1}" = 1 ]; then
  # The device image lacks gin-config (pure Python): install the carried wheel.
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site device/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

# The per-step limits (s) and the least time worth starting each with; measured on the H200 of
# 2026-11-27: our 220m train compile 40 s, anchor eager 770m about 40 s all in.
declare -A LIMIT=([gpu-check]=60 [ours-train]=150 [ours-gen]=110 [anchor-eager]=90
  [anchor-compile-train]=200 [anchor-compile-gen]=150 [parity]=180)
declare -A MIN=([gpu-check]=30 [ours-train]=60 [ours-gen]=45 [anchor-eager]=35
  [anchor-compile-train]=90 [anchor-compile-gen]=70 [parity]=45)

step() {  # step <name> <kind> <command...>: run with the kind's limit, clipped to the budget
  local name=$1 kind=$2
  shift 2
  local left=$((BUDGET_S - SECONDS))
  if [ "$left" -lt "${MIN[$kind]}" ]; then
    echo "{\"step\": \"$name\", \"skipped\": \"${left}s of the budget left, needs ${MIN[$kind]}s\"}"
    return 0
  fi
  local limit=$((left < LIMIT[$kind] ? left : LIMIT[$kind]))
  local t0=$SECONDS
  echo "=== $(date -u +%T) start ($name, limit ${limit}s, ${SECONDS}s elapsed): $*"
  timeout -k 5 "$limit" "$@"
  local rc=$?
  echo "{\"step\": \"$name\", \"rc\": $rc, \"wall_s\": $((SECONDS - t0)), \"limit_s\": $limit}"
  return 0
}

IFS=, read -r -a models <<<"$MODELS"
anchor_gen_compiled() {  # python code: the anchor's own compiled-generate function, alone
  echo "import sys, json, torch; sys.path.insert(0, 'device'); import hf_torch_anchor as a
print(json.dumps(dict(torch=torch.__version__, device=a.device_name())), flush=True)
a.bench_generate('$1', $BATCH, $SRC, $NEW_TOKENS, repeats=2, compile_model=True)"
}

{
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  cat /proc/loadavg
  timeout 60 "$PY" -c "import sys, importlib.metadata as m, jax, flax, optax, torch, transformers, gin
print('python', sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__,
      'optax', optax.__version__, 'torch', torch.__version__, 'transformers',
      transformers.__version__, 'gin-config', m.version('gin-config'), jax.devices())"
  ours=(--batch "$BATCH" --src "$SRC")
  for entry in $ORDER; do
    kind=${entry%%:*}
    model= chunk=0
    if [ "$kind" != "$entry" ]; then
      model=${models[$((${entry#*:} - 1))]:-}
      chunk_var=LOSS_CHUNK_${entry#*:}
      chunk=${!chunk_var:-0}
      [ -n "$model" ] || continue  # MODELS has no such entry
    fi
    # Sequential processes: torch's caching allocator and JAX's pool never share the GPU.
    case $kind in
      gpu-check)  # cuDNN attention (with its bias gradient): rounding only, bf16 and fp16
        step "$entry" "$kind" "$PY" -m pytest -q -n 0 -p no:cacheprovider --tb=short \
          "tests/layers/test_fused_attention.py::test_reduced_precision_gradients_are_rounding_not_defects[cudnn]" ;;
      ours-train)
        # shellcheck disable=SC2086
        step "$entry" "$kind" "$PY" benchmarks/bench.py train --models "$model" "${ours[@]}" \
          --tgt "$TGT" --steps "$STEPS" --warmup "$WARMUP" --loss-chunk "$chunk" $BENCH_ARGS ;;
      ours-train-plain)  # the reference attention path, for the fused path's gain (not default)
        step "$entry" ours-train "$PY" benchmarks/bench.py train --models "$model" "${ours[@]}" \
          --tgt "$TGT" --steps "$STEPS" --warmup "$WARMUP" --loss-chunk "$chunk" \
          --attention plain --fallbacks '' ;;
      ours-gen)
        # shellcheck disable=SC2086
        step "$entry" "$kind" "$PY" benchmarks/bench.py generate --models "$model" "${ours[@]}" \
          --new-tokens "$NEW_TOKENS" $BENCH_ARGS ;;
      anchor-eager)  # train + generate, eager
        step "$entry" "$kind" "$PY" device/hf_torch_anchor.py --models "$model" --batch "$BATCH" \
          --src "$SRC" --tgt "$TGT" --new-tokens "$NEW_TOKENS" --gen-batch "$BATCH" \
          --steps "$STEPS" --warmup "$WARMUP" ;;
      anchor-compile-train)  # the anchor's --compile mode, training only
        step "$entry" "$kind" "$PY" device/hf_torch_anchor.py --models "$model" --only-compile \
          --skip-generate --batch "$BATCH" --src "$SRC" --tgt "$TGT" --steps "$STEPS" \
          --warmup "$WARMUP" ;;
      anchor-compile-gen)  # static cache + torch.compile(mode="reduce-overhead")
        step "$entry" "$kind" "$PY" -c "$(anchor_gen_compiled "$model")" ;;
      parity)  # JAX on the GPU, torch reference on the CPU, float32 (HIGHEST precision);
        # the decoding tests check greedy / beam tokens identical to HF generate
        step "$entry" "$kind" "$PY" -m pytest -q -n 0 -p no:cacheprovider --tb=short \
          tests/networks/test_encdec_parity.py tests/layers/test_fused_attention.py \
          tests/objectives/test_chunked_loss.py tests/decoding/test_decoding_hf_parity.py ;;
      *) echo "unknown step $entry" ;;
    esac
  done
} 2>&1 | tee "$LOG"
grep '^{' "$LOG" >"$OUT/gpu_results.jsonl"
echo "=== done after ${SECONDS}s; $(wc -l <"$OUT/gpu_results.jsonl") JSON lines"
