#!/usr/bin/env bash
# Start a throw-away single-node Slurm cluster on this machine, for tests/test_cluster.py.
#
#   tests/cluster/start_slurm.sh DIR      configuration, state, logs and pid files all go to DIR
#   tests/cluster/stop_slurm.sh  DIR      stops every daemon this script started, by its pid
#
# What it does: installs Slurm and munge from Debian's packages when they are missing
# (apt-get update + install, services kept from starting), creates a munge key and starts
# munged on a private socket, writes slurm.conf / gres.conf / cgroup.conf into DIR, starts
# slurmctld and slurmd in the foreground mode (-D) in the background, and waits (bounded) until
# the node is idle. Then `source DIR/slurm.env` points sbatch, squeue, scontrol ... at it.
#
# The cluster: one node (this machine, declared with at least 8 CPUs and 64 GB), one partition
# `debug`, a fake GPU (gres gpu, File=/dev/zero) so that jobs asking for --gpus=1 schedule,
# no accounting database (AccountingStorageType=accounting_storage/none: sacct does not work,
# query jobs with squeue; MinJobAge=300 keeps finished jobs visible to squeue for 5 minutes),
# proctrack/linuxproc and task/none so that no cgroups are needed, daemons running as root.
#
# Exit status: 0 started; 77 the environment cannot run it (not root, no apt-get, packages
# cannot be installed, a daemon does not come up): the last line of stderr says why, starting
# with "SKIP:"; anything started before the failure has been stopped again.
set -uo pipefail

DIR=${1:?usage: start_slurm.sh DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
WAIT_S=${SLURM_START_TIMEOUT:-90}       # for each daemon / the node to come up
APT_TIMEOUT_S=${SLURM_APT_TIMEOUT:-400}  # apt-get update, and again apt-get install

skip() {
    echo "SKIP: $*" >&2
    bash "$HERE/stop_slurm.sh" "$DIR" >/dev/null 2>&1 || true
    exit 77
}

log_tail() { [ -f "$1" ] && tail -n 5 "$1" | tr '\n' ' ' ; }

# ---------------------------------------------------------------------------------------------
# 1. packages
# ---------------------------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || skip "not root (a Slurm cluster needs root to start its daemons)"

need_install=0
for exe in munged slurmctld slurmd sbatch squeue scontrol sinfo; do
    command -v "$exe" >/dev/null 2>&1 || need_install=1
done
if [ "$need_install" -eq 1 ]; then
    command -v apt-get >/dev/null 2>&1 || skip "Slurm is not installed and there is no apt-get"
    # Keep the packages' init scripts from starting the system-wide munge/slurm services:
    # only our own daemons, on our own socket, config and ports, may run.
    created_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && created_policy=1
    fi
    echo "installing slurm-wlm and munge from Debian's packages" >&2
    t0=$(date +%s)
    export DEBIAN_FRONTEND=noninteractive
    apt_opts=(-o DPkg::Lock::Timeout=300 -o Acquire::Retries=3)
    if ! timeout -s INT "$APT_TIMEOUT_S" apt-get "${apt_opts[@]}" update -qq > "$DIR/apt.log" 2>&1 ||
       ! timeout -s INT "$APT_TIMEOUT_S" apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends \
           slurm-wlm munge >> "$DIR/apt.log" 2>&1; then
        [ "$created_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
        skip "apt-get could not install slurm-wlm and munge: $(log_tail "$DIR/apt.log")"
    fi
    [ "$created_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
    echo "installed in $(( $(date +%s) - t0 )) s" >&2
fi
for exe in munged slurmctld slurmd sbatch squeue scontrol sinfo; do
    command -v "$exe" >/dev/null 2>&1 || skip "$exe is missing after installation"
done
echo "$(slurmctld -V)" >&2

# ---------------------------------------------------------------------------------------------
# 2. configuration
# ---------------------------------------------------------------------------------------------
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
CTLD_PORT=${SLURM_CTLD_PORT:-$(free_port)}
SLURMD_PORT=${SLURMD_PORT:-$(free_port)}
while [ "$SLURMD_PORT" = "$CTLD_PORT" ]; do SLURMD_PORT=$(free_port); done
HOST=$(hostname -s 2>/dev/null || uname -n)
HOST=${HOST%%.*}
NODE=gfnode
mkdir -p "$DIR"/{munge,state,log,run} "$DIR/spool/$NODE"
chmod 700 "$DIR/munge"

# What this node declares: at least what profiles/slurm asks for the train rule (4 CPUs per
# GPU, 32 GB), so that the real profile is what the test submits with. SlurmdParameters=
# config_overrides makes Slurm trust these numbers over what slurmd detects; nothing enforces
# them (no cgroups), and the CI profile runs at most 2 jobs at once.
read -r REAL_CPUS REAL_MEM_MB < <(timeout -s INT 30 slurmd -C 2>/dev/null | tr ' ' '\n' |
    awk -F= '$1=="CPUs"{c=$2} $1=="RealMemory"{m=$2} END{print c+0, m+0}')
CPUS=${SLURM_NODE_CPUS:-$(( REAL_CPUS > 8 ? REAL_CPUS : 8 ))}
MEM_MB=${SLURM_NODE_MEM_MB:-$(( REAL_MEM_MB > 64000 ? REAL_MEM_MB : 64000 ))}

cat > "$DIR/slurm.conf" <<EOF
# Single-node test cluster written by tests/cluster/start_slurm.sh; not for production.
ClusterName=gracefill-ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$DIR/munge/munge.socket
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups: plain process tracking, no task containment
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# no accounting database: sacct cannot answer, squeue must; keep finished jobs 5 minutes
AccountingStorageType=accounting_storage/none
# a completion record per job (JobId, name, state, nodes, CPUs) in log/jobcomp.txt
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
# log each job's GRES (GPU) request and allocation in slurmctld.log
DebugFlags=Gres
MinJobAge=300
SlurmdParameters=config_overrides
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
# start a queued job at the controller's next pass (default: not within 3 s of the last one)
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
InactiveLimit=0
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$NODE NodeHostname=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF

cat > "$DIR/gres.conf" <<EOF
# A fake GPU: the scheduler counts it, nothing opens it.
NodeName=$NODE Name=gpu File=/dev/zero
EOF

cat > "$DIR/cgroup.conf" <<EOF
# No cgroup plugin is used (proctrack/linuxproc, task/none); nothing to constrain.
ConstrainCores=no
ConstrainRAMSpace=no
ConstrainDevices=no
EOF

# Client commands find this cluster through SLURM_CONF. Inside a job, the slurm-jobstep plugin
# removes every SLURM_* variable (SLURM_CONF too) before it calls `srun` for the job step. That
# is harmless where the configuration sits in /etc/slurm, but not here: an `srun` first on PATH
# (PATH is passed on) puts SLURM_CONF back. Nothing is written outside DIR.
mkdir -p "$DIR/bin"
cat > "$DIR/bin/srun" <<EOF
#!/bin/sh
SLURM_CONF=$DIR/slurm.conf exec $(command -v srun) "\$@"
EOF
chmod 755 "$DIR/bin/srun"
cat > "$DIR/slurm.env" <<EOF
export SLURM_CONF=$DIR/slurm.conf
export PATH=$DIR/bin:\$PATH
EOF
export SLURM_CONF="$DIR/slurm.conf"

# ---------------------------------------------------------------------------------------------
# 3. daemons (each in its own session, no terminal, output to files; pid recorded)
# ---------------------------------------------------------------------------------------------
wait_for() {  # wait_for SECONDS COMMAND...: poll COMMAND until it succeeds, at most SECONDS
    local limit=$1; shift
    local t0=$SECONDS
    until "$@" >/dev/null 2>&1; do
        (( SECONDS - t0 >= limit )) && return 1
        sleep 1
    done
}
alive() { kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$DIR/munge/munge.key"
setsid munged --foreground --force --socket="$DIR/munge/munge.socket" \
    --key-file="$DIR/munge/munge.key" --pid-file="$DIR/munge/munged.pid" \
    --log-file="$DIR/munge/munged.log" --seed-file="$DIR/munge/munged.seed" \
    < /dev/null > "$DIR/log/munged.out" 2>&1 &
echo $! > "$DIR/run/munged.pid"
wait_for "$WAIT_S" test -S "$DIR/munge/munge.socket" ||
    skip "munged did not start: $(log_tail "$DIR/log/munged.out") $(log_tail "$DIR/munge/munged.log")"

setsid slurmctld -D -i -f "$DIR/slurm.conf" < /dev/null > "$DIR/log/slurmctld.out" 2>&1 &
echo $! > "$DIR/run/slurmctld.main.pid"
wait_for "$WAIT_S" timeout -s INT 15 scontrol ping ||
    skip "slurmctld did not start: $(log_tail "$DIR/log/slurmctld.out") $(log_tail "$DIR/log/slurmctld.log")"
alive "$DIR/run/slurmctld.main.pid" || skip "slurmctld exited: $(log_tail "$DIR/log/slurmctld.log")"

setsid slurmd -D -N "$NODE" -f "$DIR/slurm.conf" < /dev/null > "$DIR/log/slurmd.out" 2>&1 &
echo $! > "$DIR/run/slurmd.main.pid"
node_idle() { timeout -s INT 15 sinfo -h -n "$NODE" -o %t | grep -qx idle; }
wait_for "$WAIT_S" node_idle ||
    skip "node $NODE did not become idle: $(timeout -s INT 15 sinfo -h -N -o '%N %t %E' 2>&1) $(log_tail "$DIR/log/slurmd.out") $(log_tail "$DIR/log/slurmd.log")"

echo "slurm up: SLURM_CONF=$SLURM_CONF node=$NODE cpus=$CPUS gres=gpu:1 ports=$CTLD_PORT,$SLURMD_PORT" >&2
echo "SLURM_CONF=$SLURM_CONF"
echo "PATH_PREFIX=$DIR/bin"
