#!/bin/bash
# Train runs of one study side by side on one GPU, inside a time-limited job on a machine that is given
# back when the job ends (nothing on it survives): every run that finishes is whole in the archive.
#
#   tools/gpu/side_by_side.sh SECONDS OUT STUDY RUN [RUN...]
#
# Each run is its own `capslib sweep STUDY --only RUN`, all allowed on one GPU (CAPSLIB_RUNS_PER_GPU: one
# slot per run, core/gpus.py), so that each finishes whole however the others fare. Sharing a GPU does not
# make long runs faster together (docs/speed.md): this is for fitting whole runs into one job. At SECONDS after the start the
# runs still training are stopped (SIGTERM: run.json says interrupted; a later job trains them again). Then
# $AFTER runs, if set (e.g. tools/gpu/score_paper_scale.sh), and the logs of STUDY (no TensorBoard events),
# with results/notebooks, tables and figures where present, go to OUT/logs.tgz; each run's output is
# OUT/RUN.log. SWEEP_OPTIONS: more flags for each sweep (the tests: --profile tiny --device cpu). Size SECONDS so that the runs you need finish: a run cut off is trained again from the start.
# CAPSLIB_COMMIT: the commit of the tree sent (git rev-parse --short=12 HEAD, here), required: the GPU
# machine's copy of .git can be older than the tree, and run.json would name that commit instead.
set -u
if [ -z "${CAPSLIB_COMMIT:-}" ]; then
  echo "side_by_side.sh: set CAPSLIB_COMMIT to the commit of the tree sent (git rev-parse --short=12 HEAD)" >&2; exit 2
fi
export CAPSLIB_COMMIT T0=$(date +%s)
LIMIT=$1; OUT_DIR=$2; STUDY=$3; shift 3
mkdir -p "$OUT_DIR"
nvidia-smi -L 2>/dev/null; python3 -c "import torch; print('torch', torch.__version__)"; echo "commit $CAPSLIB_COMMIT"
pids=()
for run in "$@"; do
  command="python3 -m capslib sweep $STUDY --only $run --runs-dir runs --results-dir results ${SWEEP_OPTIONS:-}"
  CAPSLIB_RUNS_PER_GPU=$# CAPSLIB_COMMAND="$command" $command > "$OUT_DIR/$run.log" 2>&1 &
  pids+=($!)
done
while :; do
  alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ $alive = 0 ] && break
  if [ $(( $(date +%s) - T0 )) -ge "$LIMIT" ]; then
    echo "time limit: stopping the runs still training"; kill -TERM "${pids[@]}" 2>/dev/null
    for _ in $(seq 30); do alive=0; for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
      [ $alive = 0 ] && break; sleep 1; done  # each run records that it was stopped, then ends
    break
  fi
  sleep 2
done
echo "runs ended after $(( $(date +%s) - T0 )) s"
if [ -n "${AFTER:-}" ]; then eval "$AFTER"; fi
tar czf "$OUT_DIR/logs.tgz" --exclude='events.out.*' "results/$STUDY" \
  $(for d in results/notebooks results/tables results/figures; do [ -d $d ] && echo $d; done)
echo "archived after $(( $(date +%s) - T0 )) s"
