#!/usr/bin/env bash
# A single-node Slurm on this machine, for trying `metarim experiment --slurm` and for CI
# (host/tests/slurm.rs): Debian's slurmctld, slurmd and munge, started as plain daemons (no
# systemd), one node `localhost` with this machine's CPUs, one partition `debug`.
#
# usage: bash scripts/slurm-local.sh up|down|status
#
# `up` installs the packages when missing (apt-get; needs root and the network), writes
# /etc/slurm/slurm.conf (refusing to replace one it did not write), starts munged, slurmctld
# and slurmd, and waits until the node is idle. State, spool, logs and pid files live under
# $SLURM_LOCAL_DIR (default /tmp/slurm-local). `down` stops the daemons it started (by their pid
# files). Needs root: the daemons run as root here (SlurmUser=root), which is fine for a
# throwaway test cluster and nothing else.
set -euo pipefail

dir="${SLURM_LOCAL_DIR:-/tmp/slurm-local}"
conf=/etc/slurm/slurm.conf
marker="# written by metarim scripts/slurm-local.sh"

die() { echo "slurm-local: $*" >&2; exit 1; }
note() { echo "slurm-local: $*" >&2; }

need_root() {
    [ "$(id -u)" = 0 ] || die "needs root (it installs packages, writes $conf and starts daemons)"
}

install_packages() {
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurmctld)
    command -v slurmd >/dev/null || missing+=(slurmd)
    command -v sbatch >/dev/null || missing+=(slurm-client)
    command -v munged >/dev/null || missing+=(munge)
    [ ${#missing[@]} -eq 0 ] && return
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
    note "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The package lists may be missing (fresh containers) or stale; update once on failure.
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null
        apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
    }
}

write_conf() {
    if [ -e "$conf" ] && ! grep -qF "$marker" "$conf"; then
        die "$conf exists and was not written by this script: not replacing it (move it away first)"
    fi
    local cpus mem
    cpus="$(nproc)"
    # RealMemory a bit below the total, so slurmd never finds less than configured and drains
    # the node.
    mem="$(free -m | awk '/^Mem:/ { printf "%d", $2 * 0.9 }')"
    mkdir -p /etc/slurm "$dir/state" "$dir/spool" "$dir/log"
    cat > "$conf.tmp" <<EOF
$marker
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Quick turnaround for a test cluster: a requeued job may start again at once, a killed one is
# SIGKILLed 10 s after its SIGTERM, finished jobs stay visible to squeue/scontrol for 5 minutes.
KillWait=10
MinJobAge=300
SchedulerParameters=bf_interval=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$conf.tmp" "$conf"
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start_munge() {
    if [ ! -s /etc/munge/munge.key ]; then
        note "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 0400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    chmod 0755 /run/munge
    local pidfile=/run/munge/munged.pid
    if running "$pidfile"; then return; fi
    # munged refuses to run as root; Debian's package made the munge user.
    if id munge >/dev/null 2>&1; then
        runuser -u munge -- munged
    else
        munged --force
    fi
    cp "$pidfile" "$dir/munged.pid"
}

wait_idle() {
    local i state
    for i in $(seq 1 60); do
        state="$(sinfo -h -N -n localhost -o %t 2>/dev/null || true)"
        case "$state" in
            idle|mix|alloc) return 0 ;;
            down*|drain*|unk*)
                # A node from an earlier state file may come back down; resume it.
                [ "$i" -gt 5 ] && scontrol update nodename=localhost state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    sinfo -N -l >&2 || true
    tail -n 20 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
    die "the node did not become idle within 60 s (state: ${state:-unknown})"
}

up() {
    need_root
    install_packages
    mkdir -p "$dir"
    write_conf
    start_munge
    if ! running "$dir/slurmctld.pid"; then
        # Cold start (-c): no job of an earlier cluster comes back to take CPUs from the tests.
        slurmctld -c
    fi
    for _ in $(seq 1 30); do scontrol ping >/dev/null 2>&1 && break; sleep 1; done
    scontrol ping >/dev/null 2>&1 || { tail -n 20 "$dir/log/slurmctld.log" >&2; die "slurmctld does not answer"; }
    if ! running "$dir/slurmd.pid"; then
        slurmd -N localhost
    fi
    wait_idle
    note "up: $(sinfo -h -o '%P %D node(s) %c CPUs %m MB %t') (logs in $dir/log)"
}

down() {
    local name pidfile pid
    for name in slurmd slurmctld munged; do
        pidfile="$dir/$name.pid"
        running "$pidfile" || continue
        pid="$(cat "$pidfile")"
        kill "$pid"
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        rm -f "$pidfile"
        note "stopped $name (pid $pid)"
    done
}

status() {
    local name
    for name in munged slurmctld slurmd; do
        if running "$dir/$name.pid"; then
            echo "$name: running (pid $(cat "$dir/$name.pid"))"
        else
            echo "$name: not running"
        fi
    done
    scontrol ping 2>/dev/null || true
    sinfo 2>/dev/null || true
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) die "usage: $0 up|down|status" ;;
esac
