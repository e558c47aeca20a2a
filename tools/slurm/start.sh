#!/usr/bin/env bash
# Start a one-node Slurm whose state lives under STATE_DIR: munged (as the munge user, its own key and socket),
# slurmctld and slurmd (as root), from tools/slurm/slurm.conf.in. Waits until the node is idle.
# Stops first whatever an earlier start with the same STATE_DIR left (so it can be called twice, or after a
# crash). Starts with empty job state unless SLURM_TEST_KEEP_STATE=1.
# Prints `export SLURM_CONF=...` as its last line and writes it to STATE_DIR/slurm.env.
# Usage: tools/slurm/start.sh STATE_DIR      then: . STATE_DIR/slurm.env; sbatch ...; tools/slurm/stop.sh STATE_DIR
# Environment (optional): SLURM_TEST_CTLD_PORT (6817), SLURM_TEST_SLURMD_PORT (6818), SLURM_TEST_TIMEOUT (60 s
# to wait for the idle node), SLURM_TEST_CRED_EXPIRE (5 s, the least Slurm takes: how long a requeued job waits before it can start again),
# SLURM_TEST_GPUS (2 fake GPUs: gres gpu without devices; 0: none), SLURM_TEST_MIN_JOB_AGE (300 s a finished job stays visible in squeue, the only record without accounting), SLURM_TEST_GRACE (30 s preemption grace)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/_common.sh"
slurm_state_paths "${1:-}"
ctld_port=${SLURM_TEST_CTLD_PORT:-6817}
slurmd_port=${SLURM_TEST_SLURMD_PORT:-6818}
timeout_s=${SLURM_TEST_TIMEOUT:-60}
die() { echo "slurm start: $*" >&2; exit 1; }
tails() {
    local f
    for f in "$MUNGE_DIR/munged.log" "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log"; do
        if [ -s "$f" ]; then echo "---- tail of $f" >&2; tail -n 25 "$f" >&2; fi
    done
    return 0
}

for b in munged slurmctld slurmd sinfo; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || die "$b not found: run tools/slurm/install.sh first"
done
[ "$(id -u)" = 0 ] || die "must run as root (slurmd runs jobs as their users)"
export PATH="$PATH:/usr/sbin:/sbin"

# whatever an earlier start from this STATE_DIR left running
"$here/stop.sh" "$STATE" >/dev/null

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in "$ctld_port" "$slurmd_port"; do
    port_busy "$p" && die "port $p is in use (another Slurm? stop it, or set SLURM_TEST_CTLD_PORT/SLURM_TEST_SLURMD_PORT)"
done

node=$(hostname -s)
cpus=$(nproc)
# RealMemory: 90 % of what the machine (or its cgroup) has, in MiB; slurmd drains a node that has less than this
mem_kb=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
mem_mb=$((mem_kb / 1024))
for cg in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do
    if [ -r "$cg" ]; then
        lim=$(cat "$cg"); [[ "$lim" =~ ^[0-9]+$ ]] && [ $((lim / 1048576)) -lt "$mem_mb" ] && mem_mb=$((lim / 1048576))
    fi
done
mem_mb=$((mem_mb * 9 / 10))

if [ "${SLURM_TEST_KEEP_STATE:-0}" != 1 ]; then rm -rf "${STATE:?}/ctld" "${STATE:?}/slurmd"; fi
mkdir -p "$STATE/ctld" "$STATE/slurmd" "$STATE/run" "$STATE/log"
chmod 755 "$STATE/ctld" "$STATE/slurmd" "$STATE/run" "$STATE/log"

# munge: a key of our own, munged as the munge user. munged refuses paths it finds insecure (e.g. a parent
# directory writable by others without the sticky bit): then its files go under /run instead of STATE.
start_munged() {
    mkdir -p "$MUNGE_DIR"
    chown munge:munge "$MUNGE_DIR"; chmod 755 "$MUNGE_DIR"
    local key="$MUNGE_DIR/munge.key"
    [ -s "$key" ] || dd if=/dev/urandom of="$key" bs=1024 count=1 status=none
    chown munge:munge "$key"; chmod 400 "$key"
    rm -f "$MUNGE_DIR/munge.socket.2" "$MUNGE_DIR/munge.socket.2.lock" "$MUNGE_DIR/munged.pid"
    runuser -u munge -- munged --socket="$MUNGE_DIR/munge.socket.2" --key-file="$key" \
        --pid-file="$MUNGE_DIR/munged.pid" --log-file="$MUNGE_DIR/munged.log" \
        --seed-file="$MUNGE_DIR/munged.seed" 2>"$STATE/log/munged.stderr" || return 1
    for _ in $(seq 1 50); do [ -S "$MUNGE_DIR/munge.socket.2" ] && break; sleep 0.1; done
    munge --socket="$MUNGE_DIR/munge.socket.2" -n | unmunge --socket="$MUNGE_DIR/munge.socket.2" >/dev/null 2>&1
}
if ! start_munged; then
    fallback="/run/capstest-munge-$(printf %s "$STATE" | md5sum | cut -c1-10)"
    if [ "$MUNGE_DIR" != "$fallback" ]; then
        MUNGE_DIR=$fallback
        start_munged || { cat "$STATE/log/munged.stderr" >&2; tails; die "munged did not start (in $MUNGE_DIR either)"; }
    else
        cat "$STATE/log/munged.stderr" >&2; tails; die "munged did not start, or munge -n | unmunge failed"
    fi
fi
printf '%s\n' "$MUNGE_DIR" >"$STATE/munge.dir"

[ "${SLURM_TEST_CRED_EXPIRE:-5}" -ge 5 ] || die "SLURM_TEST_CRED_EXPIRE must be >= 5 (Slurm ignores smaller values and waits 120 s)"
gpus=${SLURM_TEST_GPUS:-2}
node_gres=""; [ "$gpus" -gt 0 ] && node_gres="Gres=gpu:$gpus"
sed -e "s|@STATE@|$STATE|g" -e "s|@NODE@|$node|g" -e "s|@CPUS@|$cpus|g" -e "s|@MEM_MB@|$mem_mb|g" \
    -e "s|@CTLD_PORT@|$ctld_port|g" -e "s|@SLURMD_PORT@|$slurmd_port|g" \
    -e "s|$STATE/munge/|$MUNGE_DIR/|g" \
    -e "s|@CRED_EXPIRE@|${SLURM_TEST_CRED_EXPIRE:-5}|g" -e "s|@MIN_JOB_AGE@|${SLURM_TEST_MIN_JOB_AGE:-300}|g" \
    -e "s|@GRACE@|${SLURM_TEST_GRACE:-30}|g" -e "s|@NODE_GRES@|$node_gres|g" \
    "$here/slurm.conf.in" >"$CONF.tmp"
grep -q '@[A-Z_]*@' "$CONF.tmp" && die "unfilled @NAME@ left in $CONF.tmp"
mv "$CONF.tmp" "$CONF"
# fake GPUs: slurmd drops GPUs without device files, so each is a copy of /dev/null's device under STATE/dev
# (a plain file where mknod is not allowed: slurmd then logs "not a valid character or block device", and works)
printf 'AutoDetect=off\n' >"$STATE/gres.conf"
if [ "$gpus" -gt 0 ]; then
    rm -rf "${STATE:?}/dev"; mkdir -p "$STATE/dev"
    for ((g = 0; g < gpus; g++)); do
        mknod "$STATE/dev/fakegpu$g" c 1 3 2>/dev/null || : >"$STATE/dev/fakegpu$g"
    done
    files="$STATE/dev/fakegpu0"; [ "$gpus" -eq 1 ] || files="$STATE/dev/fakegpu[0-$((gpus - 1))]"
    printf 'Name=gpu File=%s\n' "$files" >>"$STATE/gres.conf"
fi
export SLURM_CONF="$CONF"
printf 'export SLURM_CONF=%s\n' "$CONF" >"$ENV_FILE"

: >"$STATE/log/slurmctld.log"; : >"$STATE/log/slurmd.log"
slurmctld -i >"$STATE/log/slurmctld.stdout" 2>&1 || { tails; cat "$STATE/log/slurmctld.stdout" >&2; die "slurmctld did not start"; }
slurmd -N "$node" >"$STATE/log/slurmd.stdout" 2>&1 || { tails; cat "$STATE/log/slurmd.stdout" >&2; die "slurmd did not start"; }

state=""
for ((i = 0; i < timeout_s * 4; i++)); do
    state=$(timeout 5 sinfo -h -n "$node" -o %T 2>/dev/null || true)
    case "$state" in idle) break ;; esac
    sleep 0.25
done
if [ "$state" != idle ]; then
    tails
    SLURM_CONF="$CONF" timeout 5 scontrol show node "$node" >&2 2>/dev/null || true
    die "node $node not idle after ${timeout_s}s (state: '${state:-no answer}'); state dir: $STATE"
fi
echo "slurm: node $node idle (${cpus} CPUs, ${mem_mb} MiB), state in $STATE; env in $ENV_FILE"
echo "export SLURM_CONF=$CONF"
