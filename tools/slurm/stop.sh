#!/usr/bin/env bash
# Stop the one-node Slurm that tools/slurm/start.sh STATE_DIR started: cancel its jobs, stop slurmd and
# slurmctld, kill what is left of its jobs (slurmstepd and their children), stop its munged.
# Leaves STATE_DIR (logs, conf) in place. Safe to call when nothing runs, or after a crash.
# Usage: tools/slurm/stop.sh STATE_DIR
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/_common.sh"
slurm_state_paths "${1:-}"

ctld=$(_live_pid "$STATE/run/slurmctld.pid" slurmctld)
slurmd=$(_live_pid "$STATE/run/slurmd.pid" slurmd)
# 1. cancel the jobs while slurmctld still answers (quick: KillWait is short)
if [ -f "$CONF" ] && [ -n "$ctld" ]; then
    if SLURM_CONF="$CONF" timeout 10 squeue -h -o %i 2>/dev/null | grep -q .; then
        # shellcheck disable=SC2046  # one word per job id
        SLURM_CONF="$CONF" timeout 10 scancel --full --quiet \
            $(SLURM_CONF="$CONF" timeout 10 squeue -h -o %i 2>/dev/null) 2>/dev/null || true
        for _ in $(seq 1 30); do
            SLURM_CONF="$CONF" timeout 10 squeue -h -t R,CG -o %i 2>/dev/null | grep -q . || break
            sleep 0.5
        done
    fi
fi
# 2. the daemons, then whatever of their jobs is left
_named() {  # the live pids with our SLURM_CONF whose command name is one of "$@"
    local p n
    for p in $(_pids_with_conf); do
        n=$(cat "/proc/$p/comm" 2>/dev/null) || continue
        for want in "$@"; do if [ "$n" = "$want" ] && _alive1 "$p"; then echo "$p"; fi; done
    done
}
stepds=$(_named slurmstepd)
kids=$(_descendants $stepds)
kill_wait 10 $slurmd $ctld
kill_wait 3 $kids $stepds
# any other process still carrying our SLURM_CONF that is a daemon or a step (never the caller's shell)
rest=$(_named slurmctld slurmd slurmstepd slurmscriptd)
kill_wait 3 $rest
# 3. munged
mpid=$(_live_pid "$MUNGE_DIR/munged.pid" munged)
[ -z "$mpid" ] || kill_wait 5 "$mpid"
rm -f "$STATE/run/slurmctld.pid" "$STATE/run/slurmd.pid" "$MUNGE_DIR/munged.pid" \
      "$MUNGE_DIR/munge.socket.2" "$MUNGE_DIR/munge.socket.2.lock"
echo "slurm: stopped ($STATE)"
