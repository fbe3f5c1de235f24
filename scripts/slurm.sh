#!/usr/bin/env bash
# A private single-node SLURM for tests and benchmarks (no cgroups, everything under one folder).
#
#   scripts/slurm.sh up DIR     install Debian slurmctld/slurmd/slurm-client/munge if missing (root),
#                               write DIR/slurm.conf, start munged, slurmctld and slurmd on 127.0.0.1
#                               with free ports, wait until `sinfo` shows the node idle, and print
#                               `export SLURM_CONF=DIR/slurm.conf` (the only setting clients need)
#   scripts/slurm.sh down DIR   cancel this cluster's jobs, stop its three daemons by the PIDs in DIR
#   scripts/slurm.sh check      exit 0 if the binaries are present or installable here, else print why
#
# Nothing outside DIR is written (apart from the apt install): munged runs with its own key, socket
# and PID file in DIR, so a system munged or another test run's cluster is untouched.
set -euo pipefail

need=(slurmctld slurmd sinfo sbatch munged)

missing() {
    local m=()
    for b in "${need[@]}"; do command -v "$b" >/dev/null 2>&1 || m+=("$b"); done
    echo "${m[@]:-}"
}

install() {
    [ -z "$(missing)" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "slurm.sh: SLURM is not installed ($(missing)) and installing it needs root" >&2
        return 3
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "slurm.sh: SLURM is not installed ($(missing)) and this system has no apt-get" >&2
        return 3
    fi
    echo "[slurm.sh] apt-get install slurmctld slurmd slurm-client munge" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurmctld slurmd slurm-client munge >&2
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

up() {
    local dir
    dir=$(realpath -m "$1")
    install
    mkdir -p "$dir"/{state,spool,log,munge}
    chmod 700 "$dir/munge"
    # munge: a private key and socket (the key is random per cluster)
    head -c 1024 /dev/urandom >"$dir/munge/munge.key"
    chmod 400 "$dir/munge/munge.key"
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
        --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" \
        --seed-file="$dir/munge/munged.seed"
    local node cpus mem ctl_port d_port
    node=$(hostname -s)
    cpus=$(nproc)
    # 80% of the memory slurmd detects, so the node is never drained for having less than configured
    mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    mem=$((mem * 8 / 10))
    ctl_port=$(free_port)
    d_port=$(free_port)
    cat >"$dir/slurm.conf" <<EOF
# written by crrxr scripts/slurm.sh (single node, no cgroups, state under $dir)
ClusterName=crrxr
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctl_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job waits this long (default 120 s) before it may start again
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SchedulerParameters=sched_interval=1
MinJobAge=300
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
MessageTimeout=10
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -i -f "$SLURM_CONF"
    slurmd -f "$SLURM_CONF" -N "$node"
    local i state
    for i in $(seq 1 120); do
        state=$(sinfo -h -N -o '%t' 2>/dev/null | head -1 || true)
        if [ "$state" = "idle" ]; then
            echo "[slurm.sh] node $node idle (slurmctld port $ctl_port, state in $dir)" >&2
            echo "export SLURM_CONF=$SLURM_CONF"
            return 0
        fi
        sleep 0.5
    done
    echo "slurm.sh: the node did not become idle within 60 s (state: ${state:-none}); logs in $dir/log" >&2
    down "$dir"
    return 1
}

stop_pid() { # stop_pid PIDFILE NAME
    local f=$1 pid i
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

down() {
    local dir
    dir=$(realpath -m "$1")
    if [ -f "$dir/slurm.conf" ] && [ -f "$dir/slurmctld.pid" ]; then
        SLURM_CONF="$dir/slurm.conf" scancel --full --user "$(id -un)" 2>/dev/null || true
        # give the job steps a moment to die before slurmd goes (slurmstepd kills them)
        for _ in $(seq 1 30); do
            [ -z "$(SLURM_CONF="$dir/slurm.conf" squeue -h 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    stop_pid "$dir/slurmd.pid"
    stop_pid "$dir/slurmctld.pid"
    stop_pid "$dir/munge/munged.pid"
    echo "[slurm.sh] stopped the cluster in $dir" >&2
}

case "${1:-}" in
    up) up "${2:?usage: slurm.sh up DIR}" ;;
    down) down "${2:?usage: slurm.sh down DIR}" ;;
    check)
        if [ -z "$(missing)" ]; then exit 0; fi
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then exit 0; fi
        echo "SLURM is not installed ($(missing)) and cannot be installed here (needs root and apt-get)"
        exit 3
        ;;
    *)
        echo "usage: scripts/slurm.sh up DIR | down DIR | check" >&2
        exit 2
        ;;
esac
