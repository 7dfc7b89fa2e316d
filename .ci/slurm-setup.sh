#!/usr/bin/env bash
# A single-node Slurm cluster on this machine, for tests/test_slurm.py (the study submitted through submitit).
#
# Idempotent, and quick when done: a Slurm that already answers is left as it is when it is a real cluster's (its
# slurm.conf is not this script's), or when it is the cluster this script started and still matches: the same
# configuration, its node usable, its state directory wholly its Slurm user's, and a batch job that runs (2 to 10 s:
# sbatch --wait looks at the job after 2 s, then after 8 s more). Otherwise, as root, it installs Debian's slurm-wlm
# and munge with apt-get, writes /etc/slurm/slurm.conf for this machine (`hostname -s`, the CPUs of `nproc`, the
# memory of /proc/meminfo), stops the daemons an earlier run left (by their pid files), empties the cluster's state and
# spool directories, and starts munged, slurmctld and slurmd directly (containers rarely run systemd as PID 1), then
# runs a batch job.
#
# It always exits 0 and writes its verdict to $ISOKD_SLURM_STATUS (default ${TMPDIR:-/tmp}/isokd-slurm.status):
# `ok`, or `unavailable: <reason>`. The Slurm tests skip with that reason, and fail when it says ok but Slurm fails.
# tests/test_slurm_setup.py runs it twice over an earlier run's leftovers.
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
# - The Slurm user is chosen once the packages are installed: installing slurm-wlm creates the `slurm` user, and a
#   controller that ran as root before it existed left root-owned job directories in its state directory, where a
#   controller running as `slurm` cannot store a batch script (sbatch: "I/O error writing script/environment to
#   file"). srun stores no script, so only a batch job shows it.
# - The cluster keeps its state in a directory of its own (not the package's /var/lib/slurm/slurmctld), emptied at
#   each start: no test needs an earlier run's jobs, and nothing an earlier controller wrote can get in the way.
set -u
status_file=${ISOKD_SLURM_STATUS:-${TMPDIR:-/tmp}/isokd-slurm.status}
conf=/etc/slurm/slurm.conf
log_dir=/var/log/slurm
pid_dir=/run/slurm
# The test cluster's own directories: each start empties them.
state_dir=/var/lib/isokd-slurm/slurmctld
spool_dir=/var/lib/isokd-slurm/slurmd
marker="# Written by isokd's .ci/slurm-setup.sh"
say() { echo "slurm-setup: $*"; }
verdict() { echo "$1" > "$status_file"; say "$1 (written to $status_file)"; exit 0; }
have() { command -v "$1" >/dev/null 2>&1; }
controller_up() { timeout 10 scontrol ping 2>/dev/null | grep -q ' is UP'; }
host=$(hostname -s)
node_state() { timeout 10 sinfo --noheader --Node --nodes="$host" --format=%T 2>/dev/null | head -n 1; }
node_usable() { case "$(node_state)" in idle*|mix*|alloc*|comp*) return 0 ;; *) return 1 ;; esac; }
# A daemon's pid from its pid file, while that process is still this daemon: not a zombie, not a reused pid.
daemon_pid() {
  local pid
  pid=$(cat "$pid_dir/$1.pid" 2>/dev/null) || return 1
  case "$pid" in ''|*[!0-9]*) return 1 ;; esac
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] || return 1
  grep -q '^State:[[:space:]]*Z' "/proc/$pid/status" 2>/dev/null && return 1
  echo "$pid"
}
running() { daemon_pid "$1" >/dev/null; }
stop_daemon() {
  local pid
  if pid=$(daemon_pid "$1"); then
    say "stopping $1 (pid $pid, from $pid_dir/$1.pid), left by an earlier run"
    kill "$pid" 2>/dev/null
    for _ in $(seq 40); do running "$1" || break; sleep 0.25; done
    if running "$1"; then
      say "$1 (pid $pid) still runs 10 s after SIGTERM: killing it"
      kill -KILL "$pid" 2>/dev/null
      for _ in $(seq 20); do running "$1" || break; sleep 0.25; done
    fi
  fi
  rm -f "$pid_dir/$1.pid"
}
# The first file of the state directory that is not the Slurm user's (an earlier controller's, as another user).
foreign_state() { find "$state_dir" ! -user "$1" -print -quit 2>/dev/null; }
# A batch job, end to end: sbatch stores its script in the state directory (srun stores none), slurmd runs it.
# Sets probe_error to why it failed; empty when the job ran and printed this machine's name.
batch_probe() {
  local dir out rc job_id
  dir=$(mktemp -d)
  out=$(timeout 60 sbatch --parsable --wait --time=1 --job-name=isokd-setup-probe --chdir="$dir" \
          --output="$dir/probe.out" --wrap hostname 2>&1)
  rc=$?
  job_id=$(printf '%s\n' "$out" | grep -m 1 -x '[0-9][0-9]*')
  probe_error=
  if [ "$rc" = 124 ]; then
    probe_error="the batch job ${job_id:-?} did not end within 60 s"
    [ -n "$job_id" ] && scancel "$job_id" >/dev/null 2>&1
  elif [ "$rc" != 0 ]; then
    probe_error="sbatch --wait failed (exit $rc): $(printf '%s\n' "$out" | grep -v -x '[0-9]*' | paste -s -d ' ')"
  else
    local printed
    printed=$(cat "$dir/probe.out" 2>/dev/null)
    [ "$printed" = "$(hostname)" ] || [ "$printed" = "$host" ] || \
      probe_error="the batch job $job_id ran but printed '${printed:-nothing}'"
  fi
  rm -rf "$dir"
  [ -z "$probe_error" ]
}

# The configuration this machine gets. The CPUs exclude nothing: Slurm runs its jobs beside whatever else runs here.
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)
# Slurm drains a node that has less memory than configured: leave 5% to the system.
mem_mb=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.95}' /proc/meminfo)
# The Slurm user: `slurm` where the packages made it, else root. Called only once the packages are installed.
choose_slurm_user() {
  slurm_user=root
  if id slurm >/dev/null 2>&1; then
    slurm_user=slurm
  fi
}
config_text() {
  cat <<EOF
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
SlurmctldPidFile=$pid_dir/slurmctld.pid
SlurmdPidFile=$pid_dir/slurmd.pid
# The test cluster's own directories, emptied at each start by .ci/slurm-setup.sh.
StateSaveLocation=$state_dir
SlurmdSpoolDir=$spool_dir
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
}

# 1. Slurm answers already: a cluster that is not ours is left alone; ours is kept while it matches this machine and
# runs a batch job.
why="Slurm's controller does not answer here"
if have sbatch && controller_up; then
  if ! grep -qF "$marker" "$conf" 2>/dev/null; then
    say "a Slurm controller answers and $conf is not this script's: using that cluster as it is"
    verdict ok
  fi
  # Ours answers, so its packages are installed.
  choose_slurm_user
  ctld_pid=$(daemon_pid slurmctld)
  if [ "$(cat "$conf")" != "$(config_text)" ]; then
    why="this script's Slurm needs a new configuration"
  elif [ -z "$ctld_pid" ] || [ "$(stat -c %U "/proc/$ctld_pid")" != "$slurm_user" ]; then
    why="this script's controller does not run as $slurm_user from $pid_dir/slurmctld.pid"
  elif ! node_usable; then
    why="this script's node is '$(node_state)'"
  elif [ -n "$(foreign_state "$slurm_user")" ]; then
    why="this script's state directory holds $(foreign_state "$slurm_user"), not $slurm_user's"
  elif ! batch_probe; then
    why="a batch job fails on this script's Slurm: $probe_error"
  else
    say "this script's cluster answers and a batch job ran on $host"
    verdict ok
  fi
  say "$why"
elif have sbatch; then
  # A controller that runs as another user than slurm.conf's SlurmUser does not answer either.
  say "$why"
fi

if [ "$(id -u)" != 0 ]; then
  have sbatch || verdict "unavailable: Slurm is not installed and installing it needs root"
  verdict "unavailable: $why, and starting Slurm (again) needs root"
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
# Only now: installing slurm-wlm creates the slurm user.
choose_slurm_user

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

# 4. The daemons an earlier run left (their pid files say which): they go before anything they use changes.
mkdir -p /etc/slurm "$pid_dir" "$log_dir"
stop_daemon slurmd
stop_daemon slurmctld

# 5. slurm.conf for this one machine, and empty state and spool directories, the state wholly the Slurm user's.
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$(config_text)" ]; then
  say "writing $conf ($host, $cpus CPUs, $mem_mb MB, SlurmUser=$slurm_user)"
  config_text > "$conf"
fi
say "emptying $state_dir and $spool_dir (an earlier run's jobs are not kept)"
rm -rf "$state_dir" "$spool_dir"
mkdir -p "$state_dir" "$spool_dir"
chown -R "$slurm_user:" "$state_dir"
# The controller writes its log as the Slurm user; slurmd writes its own as root.
chown "$slurm_user:" "$log_dir"
[ -e "$log_dir/slurmctld.log" ] && chown "$slurm_user:" "$log_dir/slurmctld.log"

# 6. The daemons (they fork into the background and write their pid files).
say "starting slurmctld as $slurm_user"
/usr/sbin/slurmctld || verdict "unavailable: slurmctld does not start (see $log_dir/slurmctld.log)"
for _ in $(seq 40); do controller_up && break; sleep 0.25; done
controller_up || verdict "unavailable: slurmctld started but does not answer scontrol ping (see $log_dir/slurmctld.log)"
say "starting slurmd"
/usr/sbin/slurmd || verdict "unavailable: slurmd does not start (see $log_dir/slurmd.log)"

# 7. The node must be usable: one left down (a slurmd that was stopped, a configuration that changed) is resumed.
for _ in $(seq 40); do
  node_usable && break
  case "$(node_state)" in
    down*|drain*|fail*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 ;;
  esac
  sleep 0.25
done
node_usable || verdict "unavailable: the node $host is '$(node_state)' (see $log_dir/slurmd.log)"

# 8. A real batch job, end to end: the cluster is ok only once sbatch has stored one and slurmd has run it.
batch_probe || verdict "unavailable: a batch job did not run: $probe_error (see $log_dir/slurmctld.log and slurmd.log)"
say "a batch job ran on $host ($cpus CPUs)"
verdict ok
