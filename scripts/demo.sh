#!/usr/bin/env bash
# The README's first command. On a fresh machine: installs the pinned environment, trains the
# tiny CodeT5+ on the bundled Python-stdlib corpus on CPU -- stage 1 (span denoising + two causal
# LM objectives), then stage 2 (text-code contrastive / matching / generation) starting from the
# stage-1 checkpoint -- prints a metrics summary and the loss plots, and exports the final
# checkpoint as an HF model directory.
#
#   bash scripts/demo.sh [OUT_DIR]        (default OUT_DIR: /tmp/codet5p_demo)
#
# Re-running resumes finished/killed runs from their checkpoints; the HF export is redone.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/codet5p_demo}"
PY=.venv/bin/python
export TF_CPP_MIN_LOG_LEVEL=3  # TensorFlow (seqio) start-up chatter
start=$(date +%s)

echo "== setup"
bash scripts/setup.sh

echo "== stage 1: gin/experiments/tiny_stage1.gin -> $OUT/stage1"
$PY -m codet5p_jax.cli train --gin_file=gin/experiments/tiny_stage1.gin \
  --gin.MODEL_DIR="'$OUT/stage1'"

echo "== stage 2: gin/experiments/tiny_stage2.gin (from stage 1) -> $OUT/stage2"
if [ ! -f gin/experiments/tiny_stage2.gin ]; then
  echo "demo: gin/experiments/tiny_stage2.gin does not exist yet (stage-2 experiment missing)" >&2
  exit 1
fi
$PY -m codet5p_jax.cli train --gin_file=gin/experiments/tiny_stage2.gin \
  --gin.MODEL_DIR="'$OUT/stage2'" --gin.INITIAL_CHECKPOINT_PATH="'$OUT/stage1'"

echo "== HF export of the final checkpoint -> $OUT/stage2_hf"
rm -rf "$OUT/stage2_hf"
$PY -m codet5p_jax.cli convert "$OUT/stage2" "$OUT/stage2_hf" --to hf

echo "== summary"
.venv/bin/codet5p metrics "$OUT/stage1" "$OUT/stage2"
echo "  HF model: $OUT/stage2_hf ($(ls "$OUT/stage2_hf" | tr '\n' ' '))"
echo "  wall time: $(( $(date +%s) - start )) s"
