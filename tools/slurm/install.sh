#!/usr/bin/env bash
# Install a one-node Slurm (slurmctld, slurmd, the client commands) and munge from Debian's packages.
# Idempotent: does nothing when slurmctld, slurmd and munged are already there. Needs root (a container is fine;
# no systemd needed: the packages' services are not started here, tools/slurm/start.sh starts the daemons).
# Usage: tools/slurm/install.sh        (quiet; prints one line)
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
if have slurmctld && have slurmd && have munged && have sbatch; then
    echo "slurm: already installed (slurm-wlm $(dpkg-query -W -f='${Version}' slurm-wlm 2>/dev/null || echo ?))"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "slurm install: needs root (apt-get install slurm-wlm munge)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp /tmp/slurm-install.XXXXXX.log)
fail() { echo "slurm install: $1 failed; the last lines of $log:" >&2; tail -n 30 "$log" >&2; exit 1; }
# apt-get update only when the package lists don't know slurm-wlm (a fresh container has no lists)
if ! apt-cache policy slurm-wlm 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    apt-get update -q >>"$log" 2>&1 || fail "apt-get update"
fi
# policy-rc.d: keep the packages' postinst from starting services (no systemd in a container anyway)
policy=/usr/sbin/policy-rc.d; made_policy=0
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"; made_policy=1; fi
rc=0
apt-get install -y -q --no-install-recommends slurm-wlm munge >>"$log" 2>&1 || rc=$?
[ "$made_policy" = 1 ] && rm -f "$policy"
[ "$rc" = 0 ] || fail "apt-get install -y slurm-wlm munge"
have slurmctld && have slurmd && have munged || fail "install (slurmctld/slurmd/munged still missing)"
rm -f "$log"
echo "slurm: installed (slurm-wlm $(dpkg-query -W -f='${Version}' slurm-wlm))"
