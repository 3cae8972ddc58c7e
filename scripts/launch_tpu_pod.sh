#!/usr/bin/env bash
# Trains on a Cloud TPU VM slice: create (or reuse) the slice, install this checkout on every
# worker, start the same `codet5p train ... --distributed` on all workers, stream worker 0's
# log, and stop every worker as soon as one fails.
#
#   bash scripts/launch_tpu_pod.sh --name=codet5p --zone=us-central2-b --accelerator=v4-32 \
#     --gin_file=gin/experiments/stage1_770m.gin --model_dir=gs://bucket/run [--gin.X=Y ...]
#
# Options: --project=P, --version=RUNTIME (default tpu-ubuntu2204-base), --spot, --dry-run
# (print the exact commands instead of running them). Every other --gin.* / -- flag is passed
# to `codet5p train`. MODEL_DIR (and corpora, tokenizers) should be gs:// paths: every worker
# reads and writes them.
set -euo pipefail

name="" zone="" accelerator="" gin_file="" model_dir="" project="" spot=""
version="tpu-ubuntu2204-base" dry_run=0
extra=()
for arg in "$@"; do
  case "$arg" in
    --name=*) name="${arg#*=}" ;;
    --zone=*) zone="${arg#*=}" ;;
    --accelerator=*) accelerator="${arg#*=}" ;;
    --gin_file=*) gin_file="${arg#*=}" ;;
    --model_dir=*) model_dir="${arg#*=}" ;;
    --project=*) project="${arg#*=}" ;;
    --version=*) version="${arg#*=}" ;;
    --spot) spot="--spot" ;;
    --dry-run) dry_run=1 ;;
    *) extra+=("$arg") ;;
  esac
done
for required in name zone accelerator gin_file model_dir; do
  if [ -z "${!required}" ]; then
    echo "launch_tpu_pod.sh: error: --$required is required" >&2
    exit 2
  fi
done

# Hosts (workers) of a slice: v2/v3/v4/v5p names count TensorCores (4 chips = 8 cores per
# host), v5e/v6e names count chips (4 per host; an 8-chip slice is one host).
size="${accelerator##*-}"
case "$accelerator" in
  v2-* | v3-* | v4-* | v5p-*) workers=$(((size + 7) / 8)) ;;
  v5litepod-* | v5e-* | v6e-*) workers=$((size <= 8 ? 1 : size / 4)) ;;
  *) echo "launch_tpu_pod.sh: error: unknown accelerator type $accelerator" >&2; exit 2 ;;
esac

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=("--zone=$zone")
[ -n "$project" ] && where+=("--project=$project")
show() {  # the command as it can be pasted into a shell; --command=... in single quotes
  local out="" arg
  for arg in "$@"; do
    if [[ "$arg" == --command=* ]]; then
      arg="${arg#--command=}"
      out+="--command='${arg//\'/\'\\\'\'}' "
    else
      out+="$(printf '%q' "$arg") "
    fi
  done
  echo "+ ${out% }"
}
run() {  # prints the command; runs it unless --dry-run
  show "$@"
  [ "$dry_run" = 1 ] || "$@"
}

train_cmd="~/venv/bin/codet5p train --gin_file=$(printf '%q' "$gin_file")"
train_cmd+=" --gin.MODEL_DIR=\"'$model_dir'\" --distributed"
for flag in "${extra[@]}"; do train_cmd+=" $(printf '%q' "$flag")"; done
# Run in a background subshell whose pid is kept (the watcher stops its child by that pid) and
# which leaves the exit status in ~/train.rc, so a failure is told from a success.
start_cmd="cd ~/codet5p_jax && rm -f ~/train.rc && ($train_cmd > ~/train.log 2>&1;"
start_cmd+=" echo \$? > ~/train.rc) < /dev/null > /dev/null 2>&1 & echo \$! > ~/train.pid"

echo "# $accelerator: $workers worker(s); MODEL_DIR $model_dir"
# 1. The slice: reused when it exists.
if [ "$dry_run" = 1 ]; then
  show "${gcloud_tpu[@]}" describe "$name" "${where[@]}"
  echo "# only if the describe fails (no such slice):"
  show "${gcloud_tpu[@]}" create "$name" "${where[@]}" --accelerator-type="$accelerator" \
    --version="$version" $spot
elif ! "${gcloud_tpu[@]}" describe "$name" "${where[@]}" > /dev/null 2>&1; then
  run "${gcloud_tpu[@]}" create "$name" "${where[@]}" --accelerator-type="$accelerator" \
    --version="$version" $spot
fi

# 2. This checkout (tracked files at HEAD) on every worker, installed with the TPU extra.
archive="${TMPDIR:-/tmp}/codet5p_jax-$name.tar.gz"
run git -C "$(cd "$(dirname "$0")/.." && pwd)" archive --format=tar.gz -o "$archive" HEAD
run "${gcloud_tpu[@]}" scp "$archive" "$name:~/codet5p_jax.tar.gz" "${where[@]}" --worker=all
run "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="rm -rf ~/codet5p_jax && mkdir ~/codet5p_jax && tar -xzf ~/codet5p_jax.tar.gz -C ~/codet5p_jax && python3 -m venv ~/venv && ~/venv/bin/pip install -q -e \"\$HOME/codet5p_jax[tpu]\""

# 3. The same command on all workers (jax.distributed.initialize() finds the slice itself).
run "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$start_cmd"

# 4. Worker 0's log, while every worker is watched: the first failure stops them all.
stream=("${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=0 --command="tail -n +1 -F ~/train.log")
status_cmd='cat ~/train.rc 2>/dev/null || echo running'
stop_cmd='pkill -TERM -P "$(cat ~/train.pid)"; true'  # TERM: the trainer saves, then exits
if [ "$dry_run" = 1 ]; then
  show "${stream[@]}"
  echo "# every 30 s, per worker (\"running\", or the exit status):"
  for ((w = 0; w < workers; w++)); do
    show "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker="$w" --command="$status_cmd"
  done
  echo "# on a non-zero status of any worker:"
  show "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$stop_cmd"
  exit 0
fi
"${stream[@]}" &
streamer=$!
trap 'kill "$streamer" 2>/dev/null || true; rm -f "$archive"' EXIT
while true; do
  sleep 30
  done_ok=0
  for ((w = 0; w < workers; w++)); do
    rc=$("${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker="$w" --command="$status_cmd" | tail -n 1)
    if [ "$rc" = running ]; then
      continue
    elif [ "$rc" = 0 ]; then
      done_ok=$((done_ok + 1))
    else
      echo "launch_tpu_pod.sh: worker $w failed (exit $rc); stopping all workers" >&2
      "${gcloud_tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$stop_cmd"
      exit 1
    fi
  done
  if [ "$done_ok" = "$workers" ]; then
    echo "launch_tpu_pod.sh: all $workers workers finished"
    exit 0
  fi
done
