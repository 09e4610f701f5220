#!/usr/bin/env bash
# Stop the test cluster that tests/cluster/start_slurm.sh DIR started: cancel its jobs, then
# end slurmd, slurmctld and munged by the pids recorded in DIR/run (SIGTERM, then SIGKILL after
# a bounded wait). Touches no other process. Safe to call twice or on a half-started cluster.
set -uo pipefail

DIR=${1:?usage: stop_slurm.sh DIR}
[ -d "$DIR" ] || exit 0
DIR=$(cd "$DIR" && pwd)
export SLURM_CONF="$DIR/slurm.conf"

pid_of() {  # the recorded pid, if that process is still the daemon we started
    local file=$1 name=$2 pid
    pid=$(cat "$file" 2>/dev/null) || return 1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] || return 1
    echo "$pid"
}

stop() {  # stop FILE NAME: SIGTERM, wait up to 15 s, then SIGKILL
    local pid
    pid=$(pid_of "$1" "$2") || return 0
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 30); do
        kill -0 "$pid" 2>/dev/null || { echo "stopped $2 ($pid)"; return 0; }
        sleep 0.5
    done
    kill -KILL "$pid" 2>/dev/null
    echo "killed $2 ($pid)"
}

# Jobs first, while slurmctld and slurmd can still end them (their job steps are not our
# direct children, so they are ended through Slurm).
if pid_of "$DIR/run/slurmctld.main.pid" slurmctld >/dev/null; then
    timeout -s INT 20 scancel --quiet --full --signal=TERM --user="$(id -un)" >/dev/null 2>&1
    timeout -s INT 20 scancel --quiet --user="$(id -un)" >/dev/null 2>&1
    for _ in $(seq 20); do
        [ -z "$(timeout -s INT 10 squeue -h -t running,completing -o %i 2>/dev/null)" ] && break
        sleep 1
    done
fi

stop "$DIR/run/slurmd.main.pid" slurmd
stop "$DIR/run/slurmctld.main.pid" slurmctld
stop "$DIR/run/munged.pid" munged
exit 0
