#!/bin/bash
# Score each finished MultiMNIST CapsNet run once on the paper's 10M test pairs (about two minutes each on
# an H100), while the job has time: the result goes beside the run's logs, where the MultiMNIST per-run
# table reads it (capslib/study/summaries.py, PAPER_SCALE_SCORE).
#
#   tools/gpu/score_paper_scale.sh UNTIL_SECONDS   (counted from $T0, as side_by_side.sh sets it)
set -u
for dir in runs/multimnist/multimnist_routing3_recon_seed*; do
  [ -d "$dir" ] || continue
  run=$(basename "$dir"); result=results/multimnist/$run/evaluate_test_pairs_1000.json
  [ -f "$result" ] && continue
  grep -q '"status": "complete"' "results/multimnist/$run/run.json" 2>/dev/null || continue
  if [ $(( $(date +%s) - ${T0:-$(date +%s)} )) -ge "$1" ]; then echo "no time left to score $run"; continue; fi
  command="python3 -m capslib evaluate --ckpt-path $dir --test-pairs 1000 --result-path $result"
  echo "$command"; CAPSLIB_COMMAND="$command" $command 2>&1 | tail -3
done
