"""The single-node Slurm of .ci/slurm-setup.sh survives an earlier run on the same machine.

An earlier run's controller could leave root-owned job directories in the state directory (hash.N/job.M), where a
controller running as the `slurm` user cannot store a batch script: sbatch then fails with "I/O error writing
script/environment to file", while srun still works. Each test plants such directories in every hash directory, runs
the set-up again, and submits a batch job (`sbatch --wait`), which must run.

The set-up runs first as `make test` runs it (tests/test_slurm.py has run before this file). These tests skip only
where that first run says Slurm cannot be had here for a reason outside this project (no root, no apt-get, apt-get
failing) or where the Slurm that answers is not the set-up's (a real cluster is never touched); a set-up that says ok
while a batch job fails is a failure.
"""
import os
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

SETUP = ROOT/'.ci'/'slurm-setup.sh'
CONF = Path('/etc/slurm/slurm.conf')
MARKER = "# Written by isokd's .ci/slurm-setup.sh"
CONTROLLER_LOG = Path('/var/log/slurm/slurmctld.log')
# the set-up's `unavailable` reasons that are the machine's, not the set-up's
OUTSIDE_OUR_CONTROL = ('needs root', 'there is no apt-get here', 'apt-get could not install')


def set_up(status_file: Path) -> tuple[str, str]:
    "Run the set-up as `make slurm` does; return its verdict and what it printed."
    done = subprocess.run(['bash', str(SETUP)], env=os.environ | {'ISOKD_SLURM_STATUS': str(status_file)},
                          capture_output=True, text=True, timeout=600)
    printed = done.stdout + done.stderr
    assert done.returncode == 0, f"the set-up must always exit 0; it exited {done.returncode}:\n{printed}"
    return status_file.read_text().strip(), printed


def controller_errors() -> str:
    "The controller log's last error lines."
    lines = CONTROLLER_LOG.read_text(errors='replace').splitlines() if CONTROLLER_LOG.is_file() else []
    return '\n'.join([line for line in lines if 'error' in line][-5:])


def run_batch_job(folder: Path):
    "A batch job, stored by sbatch and run by slurmd; sbatch's own error text where it fails."
    output = folder/'batch.out'
    command = ['sbatch', '--wait', '--time=1', '--job-name=isokd-setup-test', f'--chdir={folder}', f'--output={output}',
               '--wrap', 'hostname']
    try:
        job = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"sbatch --wait did not return within 120 s: {error.stdout} {error.stderr}")
    assert job.returncode == 0, (f"the set-up said ok, but sbatch --wait failed (exit {job.returncode}): "
                                 f"{job.stderr.strip()}\ncontroller log:\n{controller_errors()}")
    assert output.read_text().strip() in (socket.gethostname(), socket.gethostname().split('.')[0])


def slurm_setting(name: str) -> str:
    "A setting of the set-up's slurm.conf."
    values = [line.split('=', 1)[1] for line in CONF.read_text().splitlines() if line.startswith(f'{name}=')]
    assert values, f"{CONF} has no {name}"
    return values[0]


def plant_root_owned_jobs():
    """A root-owned job directory in each hash directory of the state directory, the hash directories root's too: what
    a controller that ran as root leaves. Jobs 1 to 10: the ids a controller that starts from an empty state gives its
    first jobs."""
    state = Path(slurm_setting('StateSaveLocation'))
    for n in range(10):
        hash_dir = state/f'hash.{n}'
        job_dir = hash_dir/f'job.{n or 10}'
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir/'script').write_text('#!/bin/sh\nhostname\n')
        for path in (hash_dir, job_dir, job_dir/'script'):
            os.chown(path, 0, 0)
            path.chmod(0o700)


@pytest.fixture(scope='module')
def first_set_up(tmp_path_factory):
    "The set-up's first run, skipping where it cannot be had here; then a batch job runs."
    if os.geteuid() != 0:
        pytest.skip("planting an earlier run's root-owned job directories needs root")
    folder = tmp_path_factory.mktemp('slurm-setup')
    status, printed = set_up(folder/'first.status')
    if status != 'ok' and any(reason in status for reason in OUTSIDE_OUR_CONTROL):
        pytest.skip(f"Slurm cannot start here: {status} (the set-up's first run)")
    assert status == 'ok', f"the set-up's first run says {status!r}:\n{printed}"
    if MARKER not in (CONF.read_text() if CONF.is_file() else ''):
        pytest.skip(f"the Slurm that answers here is not the set-up's ({CONF}): it is left alone")
    run_batch_job(folder)
    return folder


def test_slurm_setup_survives_root_owned_job_directories(first_set_up, tmp_path):
    plant_root_owned_jobs()
    status, printed = set_up(tmp_path/'second.status')
    assert status == 'ok', printed
    run_batch_job(tmp_path)


def test_slurm_setup_survives_an_earlier_run_as_another_slurm_user(first_set_up, tmp_path):
    # the earlier run chose SlurmUser before slurm-wlm made the `slurm` user, and its controller ran as root
    user = slurm_setting('SlurmUser')
    other = 'root' if user != 'root' else 'slurm'
    CONF.write_text(CONF.read_text().replace(f'SlurmUser={user}\n', f'SlurmUser={other}\n'))
    plant_root_owned_jobs()
    status, printed = set_up(tmp_path/'second.status')
    assert status == 'ok', printed
    assert slurm_setting('SlurmUser') == user, printed
    run_batch_job(tmp_path)
