#!/usr/bin/env bash
# Stop exactly what start.sh started (by its PID files) and remove its /etc/slurm symlink.
set -uo pipefail
STATE=${DPOLAB_SLURM_DIR:-/tmp/dpolab-slurm}
export SLURM_CONF="$STATE/slurm.conf"
# jobs still running would outlive slurmd (their slurmstepd stays): cancel them first
if [ -f "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null; then
  jobs=$(timeout 10 squeue -h -o %i 2>/dev/null)
  if [ -n "$jobs" ]; then
    timeout 10 scancel $jobs
    for _ in $(seq 60); do [ -z "$(timeout 5 squeue -h -t running,completing -o %i 2>/dev/null)" ] && break; sleep 0.5; done
  fi
fi
for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" "$STATE/munge/munged.pid"; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null && for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
  rm -f "$pidfile"
done
[ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$STATE/slurm.conf" ] && rm -f /etc/slurm/slurm.conf
exit 0
