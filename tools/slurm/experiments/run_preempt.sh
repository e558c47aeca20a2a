#!/usr/bin/env bash
# (b)/(c): one Checkpointable task, acted on after 10 s: scancel --signal=USR2, scontrol requeue, preemption by
# a job in partition "urgent", plain scancel. Needs SLURM_CONF (a running tools/slurm/start.sh cluster) and
# PYTHON (an interpreter with submitit). Writes under ${1:-/tmp/slurm-exp}.
cd "$(dirname "$0")" || exit 1
out=${1:-/tmp/slurm-exp}; py=${PYTHON:-python3}
for a in usr2 requeue urgent cancel; do
  rm -rf "${out:?}/$a"; mkdir -p "$out/$a"
  w=120; [ $a = cancel ] && w=30
  echo "=== $a"; timeout 400 "$py" exp3_preempt.py "$out/$a" $a 30 10 $w 2>&1 | grep -v "sacct\|accounting"
  "$py" events.py "$out/$a/run0/events.jsonl"
  grep -h -E "Caught|Requeued|Bypass|Exiting|not requeued|rror" "$out/$a"/submitit/*/*_0_log.err | cut -c1-160 | head
  sleep 3
done
