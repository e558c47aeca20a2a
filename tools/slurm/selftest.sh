#!/usr/bin/env bash
# Check tools/slurm/{start,stop}.sh on this machine: a fresh start, a 3-task array, starting twice, starting
# after a crash (daemons killed with jobs running), stopping twice; nothing of ours may be left running.
# Usage: tools/slurm/selftest.sh [STATE_DIR]     (as root, after tools/slurm/install.sh; ~20 s)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
S=${1:-$(mktemp -d /tmp/slurm-selftest.XXXXXX)}
. "$here/_common.sh"
# our live daemons and jobs: processes with our SLURM_CONF named like a daemon or the jobs below, and our munged
ours() {
    local p
    for p in $(_pids_with_conf); do
        case "$(cat "/proc/$p/comm" 2>/dev/null)" in slurm*|sleep) _alive1 "$p" && echo "$p $(tr '\0' ' ' <"/proc/$p/cmdline")" ;; esac
    done
    pgrep -a -x munged | grep -F -e "$MUNGE_DIR/" || true
}
t() { local t0; t0=$(date +%s.%N); "$@"; echo "  [$(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s: ${*##*/}]"; }
t "$here/stop.sh" "$S"
t "$here/start.sh" "$S"
. "$S/slurm.env"
slurm_state_paths "$S"
sinfo -h -o '%P %T %D %G'
t0=$(date +%s.%N)
jid=$(sbatch --parsable --array=0-2 -o "$S/arr_%A_%a.out" --wrap 'hostname; echo task $SLURM_ARRAY_TASK_ID')
while squeue -h -j "$jid" -t PD,R,CG | grep -q .; do sleep 0.2; done
echo "  [$(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)") s: sbatch --array=0-2 until all done]"
cat "$S"/arr_"$jid"_*.out | paste -sd' '
[ "$(cat "$S"/arr_"$jid"_*.out | grep -c '^task')" = 3 ] || { echo "FAIL: not 3 tasks"; exit 1; }
t "$here/start.sh" "$S"     # start twice
sbatch -Q -o /dev/null --wrap "sleep 300 # $S/"; sbatch -Q -o /dev/null --wrap "sleep 301 # $S/"; sleep 2
[ "$(squeue -h -t R | wc -l)" = 2 ] || { echo "FAIL: 2 jobs not running"; squeue; exit 1; }
[ "$(ours | grep -c 'sleep 30')" = 2 ] || { echo "FAIL: the check does not see the jobs"; ours; exit 1; }
for p in $(cat "$S/run/slurmctld.pid" "$S/run/slurmd.pid" "$(cat "$S/munge.dir")/munged.pid"); do kill -9 "$p"; done
sleep 1
t "$here/start.sh" "$S"     # after a crash: the jobs' processes must be gone
squeue -h | grep -q . && { echo "FAIL: jobs survived the restart"; exit 1; }
sbatch -Q -o /dev/null --wrap "sleep 302 # $S/"; sleep 1
t "$here/stop.sh" "$S"
t "$here/stop.sh" "$S"      # stop twice
left=$(ours); [ -z "$left" ] || { echo "FAIL: left running:"; echo "$left"; exit 1; }
echo "slurm selftest: OK ($S)"
