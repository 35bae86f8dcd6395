#!/usr/bin/env bash
# Start / stop a single-node Slurm (Debian's slurm-wlm + munge) in a scratch folder, for the
# cluster-profile test. Nothing is written outside $D; /etc is not touched.
#   tests/slurm/local_slurm.sh start DIR   → prints the PATH prefix holding srun/sbatch/... wrappers
#   tests/slurm/local_slurm.sh stop DIR
set -euo pipefail
cmd=$1
D=$(realpath -m "$2")
case "$cmd" in
start)
    if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
        echo "installing slurm-wlm and munge" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) >&2
    fi
    mkdir -p "$D"/{munge,state/ctld,state/d,run,log,bin}
    # munged wants every folder on its socket's path traversable by all; test temp folders
    # (e.g. pytest's, mode 700) are not, so the socket lives in its own folder under /tmp.
    SOCKDIR=$(mktemp -d /tmp/ssdd-munge.XXXXXX)
    chmod 755 "$SOCKDIR"
    echo "$SOCKDIR" > "$D/run/sockdir"
    SOCK="$SOCKDIR/munge.socket.2"
    # our own key, owned by the user running munged (Debian's belongs to the munge user)
    key="$D/munge/munge.key"
    [ -f "$key" ] || dd if=/dev/urandom bs=1 count=1024 of="$key" 2>/dev/null
    chmod 700 "$D/munge"
    chmod 600 "$key"
    cat > "$D/slurm.conf" <<CONF
ClusterName=localcluster
SlurmctldHost=localhost
AuthType=auth/munge
AuthInfo=socket=$SOCK
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$D/state/ctld
SlurmdSpoolDir=$D/state/d
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=3600
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=localhost CPUs=$(nproc) RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
    # The slurm executor strips SLURM_* from the environment of its nested srun: wrappers put
    # SLURM_CONF back for every client command.
    for c in srun sbatch squeue scancel sinfo scontrol sacct; do
        real=$(command -v $c || true)
        [ -n "$real" ] || continue
        printf '#!/bin/sh\nexport SLURM_CONF=%s\nexec %s "$@"\n' "$D/slurm.conf" "$real" > "$D/bin/$c"
        chmod +x "$D/bin/$c"
    done
    setsid munged -F --socket="$SOCK" --key-file="$key" \
        --log-file="$D/log/munged.log" --pid-file="$D/run/munged.pid" --seed-file="$D/munge/seed" \
        >"$D/log/munged.out" 2>&1 < /dev/null &
    for i in $(seq 1 20); do [ -S "$SOCK" ] && break; sleep 0.5; done
    [ -S "$SOCK" ] || { echo "munged did not start; see $D/log/munged.out" >&2; exit 1; }
    SLURM_CONF="$D/slurm.conf" setsid slurmctld -D -f "$D/slurm.conf" >"$D/log/ctld.out" 2>&1 < /dev/null &
    SLURM_CONF="$D/slurm.conf" setsid slurmd -D -N localhost -f "$D/slurm.conf" >"$D/log/d.out" 2>&1 < /dev/null &
    for i in $(seq 1 30); do
        if "$D/bin/sinfo" -h -o %t 2>/dev/null | grep -q idle; then echo "$D/bin"; exit 0; fi
        sleep 1
    done
    echo "local Slurm did not come up; see $D/log" >&2
    exit 1
    ;;
stop)
    # the daemons' own pid files (setsid may fork, so $! is not their pid)
    for f in slurmd slurmctld munged; do
        [ -f "$D/run/$f.pid" ] && kill "$(cat "$D/run/$f.pid")" 2>/dev/null || true
    done
    [ -f "$D/run/sockdir" ] && rm -rf "$(cat "$D/run/sockdir")"
    ;;
esac
