#!/usr/bin/env bash
# A real single-node SLURM on 127.0.0.1 for the tests: munged, slurmctld and slurmd, all
# under one state folder (default /tmp/dpolab-slurm), PID files there; stop.sh stops exactly
# these. Installs the Debian packages if missing (root or sudo). Prints the SLURM_CONF path.
set -euo pipefail
STATE=${DPOLAB_SLURM_DIR:-/tmp/dpolab-slurm}
PACKAGES="slurmctld slurmd slurm-client slurm-wlm-basic-plugins munge"
SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
if ! dpkg -s $PACKAGES >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null
fi
mkdir -p "$STATE"/{munge,munge-key,spool/ctld,spool/d,log}
chmod 755 "$STATE"
# munged runs as the munge user: every folder above the state folder must let it through
runuser -u munge -- test -x "$STATE/munge" || { echo "$STATE is not reachable by the munge user (a parent folder is private): use another DPOLAB_SLURM_DIR" >&2; exit 1; }
# munged wants its key private and its socket folder open to every user
chown munge:munge "$STATE/munge" "$STATE/munge-key"; chmod 755 "$STATE/munge"; chmod 700 "$STATE/munge-key"
[ -f "$STATE/munge-key/munge.key" ] || { mungekey -c -k "$STATE/munge-key/munge.key"; chown munge:munge "$STATE/munge-key/munge.key"; chmod 600 "$STATE/munge-key/munge.key"; }
HOST=$(hostname -s)
NODE=$(slurmd -C | head -1 | sed "s/^NodeName=[^ ]*/NodeName=$HOST NodeAddr=127.0.0.1/")
cat > "$STATE/slurm.conf" <<CONF
ClusterName=dpolab
SlurmctldHost=$HOST(127.0.0.1)
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$STATE/spool/ctld
SlurmdSpoolDir=$STATE/spool/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MailProg=/bin/true
ReturnToService=2
SlurmctldPort=6817
SlurmdPort=6818
MinJobAge=300
KillWait=30                       # SLURM's default: seconds between SIGTERM and SIGKILL
$NODE State=UNKNOWN
# OverSubscribe=FORCE:3: up to 3 jobs share a core, so 3 one-thread jobs run at once on 2 cores
# (the concurrency of the local smoke run the SLURM run is compared with); memory stays consumable
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:3
CONF
# the SLURM jobstep plugin drops SLURM_CONF before its inner srun: the config must also be at
# the default path; a symlink that stop.sh removes (only if it still points here)
mkdir -p /etc/slurm
# a symlink left by an earlier test cluster that was killed before stop.sh (its slurmctld no
# longer runs) is stale: take it over; a site's own file, or a test cluster still up, is refused
if [ -e /etc/slurm/slurm.conf ] || [ -L /etc/slurm/slurm.conf ]; then
  previous=$(readlink /etc/slurm/slurm.conf || true)
  if [ "$previous" != "$STATE/slurm.conf" ]; then
    previous_pid=$(cat "$(dirname "$previous")/slurmctld.pid" 2>/dev/null || true)
    if [ ! -L /etc/slurm/slurm.conf ] || { [ -e "$previous" ] && ! grep -qx "ClusterName=dpolab" "$previous"; }; then
      echo "/etc/slurm/slurm.conf exists and is not ours: refusing" >&2; exit 1
    fi
    if [ -n "$previous_pid" ] && [ "$(cat /proc/"$previous_pid"/comm 2>/dev/null)" = slurmctld ]; then
      echo "/etc/slurm/slurm.conf belongs to a test cluster still running ($previous, slurmctld $previous_pid): refusing" >&2; exit 1
    fi
    echo "replacing a stale /etc/slurm/slurm.conf -> $previous (its slurmctld is not running)" >&2
  fi
fi
ln -sfn "$STATE/slurm.conf" /etc/slurm/slurm.conf
export SLURM_CONF="$STATE/slurm.conf"
runuser -u munge -- munged --socket="$STATE/munge/munge.socket" --key-file="$STATE/munge-key/munge.key" \
  --pid-file="$STATE/munge/munged.pid" --log-file="$STATE/munge-key/munged.log" --seed-file="$STATE/munge-key/munge.seed"
slurmctld -f "$SLURM_CONF"
slurmd -f "$SLURM_CONF"
for _ in $(seq 60); do
  # a controller that died on its config would leave sinfo retrying for minutes: check it is alive
  kill -0 "$(cat "$STATE/slurmctld.pid" 2>/dev/null)" 2>/dev/null || break
  if timeout 5 sinfo -h -o %T 2>/dev/null | grep -qx idle; then echo "$SLURM_CONF"; exit 0; fi
  sleep 0.5
done
echo "SLURM did not come up; logs in $STATE/log:" >&2
tail -n 5 "$STATE/log/slurmctld.log" "$STATE/log/slurmd.log" >&2
exit 1
