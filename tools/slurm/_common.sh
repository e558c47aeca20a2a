# Sourced by start.sh and stop.sh. Sets the paths of a state directory and defines helpers.
# shellcheck shell=bash disable=SC2034  # the paths are used by the scripts that source this
slurm_state_paths() {
    [ -n "${1:-}" ] || { echo "usage: $0 STATE_DIR" >&2; exit 2; }
    mkdir -p "$1"
    STATE=$(cd "$1" && pwd -P)
    CONF="$STATE/slurm.conf"
    ENV_FILE="$STATE/slurm.env"
    # munged runs as the munge user, which must be able to reach its directory: under STATE when it can
    # (STATE and its parents searchable by others), else under /run (e.g. pytest's /tmp/pytest-of-root is 0700)
    if [ -f "$STATE/munge.dir" ]; then
        MUNGE_DIR=$(cat "$STATE/munge.dir")
    elif runuser -u munge -- test -x "$STATE" 2>/dev/null; then
        MUNGE_DIR="$STATE/munge"
    else
        MUNGE_DIR="/run/capstest-munge-$(printf %s "$STATE" | md5sum | cut -c1-10)"
    fi
}

# pids of processes whose environment has SLURM_CONF=$CONF (our daemons, their slurmstepd, most jobs)
_pids_with_conf() {
    local p
    for p in /proc/[0-9]*; do
        [ "${p#/proc/}" = "$$" ] && continue
        if { tr "\\0" "\\n" <"$p/environ" | grep -qxF "SLURM_CONF=$CONF"; } 2>/dev/null; then echo "${p#/proc/}"; fi
    done
}
# all descendants of the given pids
_descendants() {
    local frontier="$*" all="" next p ppid
    while [ -n "$frontier" ]; do
        next=""
        for p in /proc/[0-9]*; do
            ppid=$(_stat "${p#/proc/}") || continue; ppid=$(echo "$ppid" | cut -d' ' -f2)
            for f in $frontier; do [ "$ppid" = "$f" ] && next="$next ${p#/proc/}"; done
        done
        all="$all $next"; frontier="$next"
    done
    echo $all
}
# a pid is alive when it exists and is not a zombie (a container's PID 1 may never reap daemons' parents)
# (fields of /proc/PID/stat after the ")" that closes the command name: state ppid ...)
_stat() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; echo "${s##*) }"; }
_alive1() { local st; st=$(_stat "$1") && [ -n "$st" ] && [ "${st%% *}" != Z ]; }
_alive() { local p; for p in "$@"; do _alive1 "$p" && return 0; done; return 1; }
# the pid in a pid file, if that process is alive and has the expected name (not a recycled pid)
_live_pid() { local p; p=$(_pid_from "$1"); [ -n "$p" ] && _alive1 "$p" && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = "$2" ] && echo "$p" || true; }
# kill_wait SECONDS PID...: SIGTERM, wait up to SECONDS, then SIGKILL
kill_wait() {
    local t=$1 i; shift
    [ $# -gt 0 ] || return 0
    kill -TERM "$@" 2>/dev/null || true
    for ((i = 0; i < t * 10; i++)); do _alive "$@" || return 0; sleep 0.1; done
    kill -KILL "$@" 2>/dev/null || true
    for ((i = 0; i < 30; i++)); do _alive "$@" || return 0; sleep 0.1; done
}
_pid_from() { [ -s "$1" ] && cat "$1" 2>/dev/null || true; }
