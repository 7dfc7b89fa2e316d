#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for tests/test_slurm.py (the study submitted through submitit).
#
# Idempotent and quick when done: a Slurm that already answers is left as it is (a real cluster's login node, or the
# cluster this script started, while its configuration still matches this machine), so a second run takes a fraction
# of a second. Otherwise, as root, it installs Debian's slurm-wlm and munge with apt-get, writes
# /etc/slurm/slurm.conf for this machine (`hostname -s`, the CPUs of `nproc`, the memory of /proc/meminfo) and starts
# munged, slurmctld and slurmd directly (containers rarely run systemd as PID 1), then runs a test job.
#
# It always exits 0 and writes its verdict to $ISOKD_SLURM_STATUS (default ${TMPDIR:-/tmp}/isokd-slurm.status):
# `ok`, or `unavailable: <reason>`. The Slurm tests skip with that reason, and fail when it says ok but Slurm fails.
#
# What was tried, in the CI container (a Firecracker VM with Debian 12, no systemd, cgroup v1 mounted but not
# delegated to us):
# - apt-get's post-install scripts do not start the daemons (policy-rc.d forbids it, and there is no systemd), so this
#   script starts them itself and keeps their pid files in /run/slurm.
# - proctrack/cgroup and task/cgroup are not used: the container cannot be relied on to give Slurm a cgroup tree of
#   its own. proctrack/linuxproc (the process tree by parent pid) and task/none work anywhere; nothing is confined,
#   which is fine for tests on one machine.
# - Accounting is off: slurmdbd needs a MySQL/MariaDB server, too heavy for CI. So `sacct` answers "Slurm accounting
#   storage is disabled"; submitit only warns when it cannot call sacct, and isokd.slurm does not use sacct: it reads
#   a job's end from submitit's result file, and its state from `squeue --states=all`, which keeps ended jobs for
#   MinJobAge (600 s here). jobcomp/filetxt was not needed.
# - `nproc` honours OMP_NUM_THREADS (CI sets it to 1), so it is counted without it.
set -u
status_file=${ISOKD_SLURM_STATUS:-${TMPDIR:-/tmp}/isokd-slurm.status}
conf=/etc/slurm/slurm.conf
log_dir=/var/log/slurm
marker="# Written by isokd's .ci/slurm-setup.sh"
say() { echo "slurm-setup: $*"; }
verdict() { echo "$1" > "$status_file"; say "$1 (written to $status_file)"; exit 0; }
have() { command -v "$1" >/dev/null 2>&1; }
controller_up() { timeout 10 scontrol ping 2>/dev/null | grep -q ' is UP'; }
host=$(hostname -s)
node_state() { timeout 10 sinfo --noheader --Node --nodes="$host" --format=%T 2>/dev/null | head -n 1; }
node_usable() { case "$(node_state)" in idle*|mix*|alloc*|comp*) return 0 ;; *) return 1 ;; esac; }

# The configuration this machine gets. The CPUs exclude nothing: Slurm runs its jobs beside whatever else runs here.
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
# Slurm drains a node that has less memory than configured: leave 5% to the system.
mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.95}' /proc/meminfo)
slurm_user=root
id slurm >/dev/null 2>&1 && slurm_user=slurm
new_conf=$(cat <<EOF
$marker: a single-node cluster on $host for tests.
ClusterName=isokd
SlurmctldHost=$host
SlurmUser=$slurm_user
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# No cgroups: the process tree by parent pid, no CPU binding (works in containers).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
ReturnToService=2
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldLogFile=$log_dir/slurmctld.log
SlurmdLogFile=$log_dir/slurmd.log
# Accounting off (slurmdbd needs a MySQL server): ended jobs stay visible to squeue for MinJobAge seconds.
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=600
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=10
Waittime=0
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
)

# 1. Slurm answers already: a cluster that is not ours is left alone; ours is kept while it matches this machine.
if have sbatch && controller_up; then
  if ! grep -qF "$marker" "$conf" 2>/dev/null; then
    say "a Slurm controller answers and $conf is not this script's: using that cluster as it is"
    verdict ok
  fi
  if [ "$(cat "$conf")" = "$new_conf" ] && node_usable; then
    verdict ok
  fi
  say "this script's cluster answers, but its configuration or its node ('$(node_state)') needs fixing"
fi

if [ "$(id -u)" != 0 ]; then
  have sbatch || verdict "unavailable: Slurm is not installed and installing it needs root"
  verdict "unavailable: Slurm's controller does not answer here, and starting one needs root"
fi

# 2. Packages (Debian: slurm-wlm brings slurmctld, slurmd and the client commands; munge authenticates them).
if ! have slurmctld || ! have slurmd || ! have munged || ! have sbatch; then
  have apt-get || verdict "unavailable: Slurm is not installed and there is no apt-get here"
  say "installing slurm-wlm and munge with apt-get"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
           slurm-wlm munge >/dev/null 2>&1; }; then
    verdict "unavailable: apt-get could not install slurm-wlm and munge"
  fi
fi

# 3. munge: a key (the Debian package makes one; some images strip it) and the daemon.
mkdir -p /etc/munge /run/munge /var/lib/munge /var/log/munge
if [ ! -s /etc/munge/munge.key ]; then
  say "creating /etc/munge/munge.key"
  if have mungekey; then
    mungekey --create --force >/dev/null 2>&1
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
fi
munge_works() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
if id munge >/dev/null 2>&1; then
  chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
  chmod 0700 /etc/munge
  chmod 0400 /etc/munge/munge.key
  chmod 0755 /run/munge
fi
if ! munge_works; then
  say "starting munged"
  if id munge >/dev/null 2>&1; then
    runuser -u munge -- /usr/sbin/munged --force
  else
    /usr/sbin/munged --force
  fi
  for _ in $(seq 40); do munge_works && break; sleep 0.25; done
  munge_works || verdict "unavailable: munged does not start (see /var/log/munge/munged.log)"
fi

# 4. slurm.conf for this one machine. Rewritten only when it differs, and then the daemons are restarted.
mkdir -p /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd /run/slurm "$log_dir"
chown "$slurm_user" /var/lib/slurm/slurmctld "$log_dir"
restart=no
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$new_conf" ]; then
  say "writing $conf ($host, $cpus CPUs, $mem_mb MB)"
  printf '%s\n' "$new_conf" > "$conf"
  restart=yes
fi
running() { [ -s "/run/slurm/$1.pid" ] && kill -0 "$(cat "/run/slurm/$1.pid")" 2>/dev/null; }
stop_daemon() {
  if running "$1"; then
    say "stopping $1 (pid $(cat "/run/slurm/$1.pid")) to reload the configuration"
    kill "$(cat "/run/slurm/$1.pid")"
    for _ in $(seq 40); do running "$1" || break; sleep 0.25; done
  fi
  rm -f "/run/slurm/$1.pid"
}
if [ "$restart" = yes ]; then
  stop_daemon slurmd
  stop_daemon slurmctld
fi

# 5. The daemons (they fork into the background and write their pid files).
if ! running slurmctld; then
  say "starting slurmctld"
  /usr/sbin/slurmctld || verdict "unavailable: slurmctld does not start (see $log_dir/slurmctld.log)"
fi
for _ in $(seq 40); do controller_up && break; sleep 0.25; done
controller_up || verdict "unavailable: slurmctld started but does not answer scontrol ping (see $log_dir/slurmctld.log)"
if ! running slurmd; then
  say "starting slurmd"
  /usr/sbin/slurmd || verdict "unavailable: slurmd does not start (see $log_dir/slurmd.log)"
fi

# 6. The node must be usable: one left down (a slurmd that was stopped, a configuration that changed) is resumed.
for _ in $(seq 40); do
  node_usable && break
  case "$(node_state)" in
    down*|drain*|fail*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 ;;
  esac
  sleep 0.25
done
node_usable || verdict "unavailable: the node $host is '$(node_state)' (see $log_dir/slurmd.log)"

# 7. A real job, end to end: the cluster is ok only once it has run one.
probe=$(timeout 60 srun --nodes=1 --ntasks=1 --time=1 hostname 2>&1)
[ "$probe" = "$(hostname)" ] || [ "$probe" = "$host" ] || \
  verdict "unavailable: a test job did not run: ${probe:-no output} (see $log_dir/slurmd.log)"
say "a test job ran on $host ($cpus CPUs)"
verdict ok
