"""The study on Slurm (isokd.slurm): against the single-node Slurm that .ci/slurm-setup.sh starts, and without Slurm.

The tests that need a live Slurm are named `test_slurm_cluster_*` (select them with `-k slurm_cluster`; `-k slurm`
selects the whole file). They skip, saying why, when the set-up was not run or recorded that Slurm cannot start here.
"""
import argparse
import contextlib
import io
import json
import os
import subprocess
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest

from isokd import plan as planning, slurm
from isokd.launch import parse_args
from isokd.plan import plan
from isokd.study import run_study
from conftest import ROOT

# where .ci/slurm-setup.sh writes `ok` or `unavailable: <reason>`
TMP = Path(os.environ.get('TMPDIR') or '/tmp')
STATUS_FILE = Path(os.environ.get('ISOKD_SLURM_STATUS') or TMP/'isokd-slurm.status')


def history(folder: Path) -> list:
    "The per-epoch numbers of a finished run."
    metrics = json.loads((folder/'metrics.json').read_text())
    assert metrics['finished']
    # the test set where an epoch was evaluated (every eval_every epochs and the last)
    return [(epoch['train_loss'], epoch.get('test_acc'), epoch.get('test_loss')) for epoch in metrics['history']]


def slurm_job_ids() -> set:
    "Every job the Slurm controller knows, ended ones included."
    listing = subprocess.run(['squeue', '--noheader', '--states=all', '--format=%i'], capture_output=True, text=True,
                             check=True)
    return set(listing.stdout.split())


def command_line(*args) -> argparse.Namespace:
    "The study's command line as isokd.study parses it: its --threads, and the executor options of `add_arguments`."
    parser = argparse.ArgumentParser()
    parser.add_argument('--threads', type=int, default=None)
    slurm.add_arguments(parser)
    return parser.parse_args(list(args))


# ---- with a live Slurm ----------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def slurm_cluster():
    "Skip unless the set-up recorded a working Slurm; if it did, Slurm must answer."
    if not STATUS_FILE.is_file():
        pytest.skip(f"the Slurm set-up script was not run (no {STATUS_FILE}): run `bash .ci/slurm-setup.sh` first")
    status = STATUS_FILE.read_text().strip()
    if status != 'ok':
        pytest.skip(f"Slurm cannot start here: {status} (recorded in {STATUS_FILE} by .ci/slurm-setup.sh)")
    slurm.check_slurm()


@pytest.fixture(scope='module')
def slurm_study(slurm_cluster, tmp_path_factory):
    """The smoke study (teacher, kd-mixup-i; seeds 0 and 1) submitted to Slurm, teacher seed1 made to fail by a corrupt
    checkpoint; seed 0 also run locally into another root meanwhile; then followed until every Slurm job has ended."""
    root, local_root = tmp_path_factory.mktemp('slurm'), tmp_path_factory.mktemp('local')
    bad_teacher = root/'smoke'/'teacher'/'seed1'
    bad_teacher.mkdir(parents=True)
    (bad_teacher/'checkpoint.pt').write_bytes(b'not a checkpoint')
    printed = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        submitted = slurm.submit_study(plan('smoke', seeds=2, configs='kd-mixup-i', root=root), time='00:10:00')
    submit_seconds = time.perf_counter() - started
    right_after = {status['name']: status for status in slurm.slurm_status(root/'smoke')}
    local = run_study('smoke', 1, 'kd-mixup-i', local_root, workers=1, threads=1, report=False)
    statuses = slurm.wait_study(root/'smoke', poll_s=1, timeout_s=300, echo=False)
    return SimpleNamespace(root=root, local_root=local_root, submitted=submitted, printed=printed.getvalue(),
                           submit_seconds=submit_seconds, right_after=right_after, local=local,
                           statuses={status['name']: status for status in statuses})


def test_slurm_cluster_submission_returns_at_once_and_is_recorded(slurm_study):
    names = ['teacher seed0', 'teacher seed1', 'kd-mixup-i seed0', 'kd-mixup-i seed1']
    assert [record['name'] for record in slurm_study.submitted] == names
    job_ids = {record['name']: record['job_id'] for record in slurm_study.submitted}
    # students wait for their own seed's teacher
    assert [record['after'] for record in slurm_study.submitted] == [None, None, job_ids['teacher seed0'],
                                                                      job_ids['teacher seed1']]
    for record in slurm_study.submitted:
        assert f"{record['name']:<20} Slurm job {record['job_id']}" in slurm_study.printed
        assert record['log'] in slurm_study.printed
    # the submitting process does not wait for the runs: a student cannot have run yet
    assert slurm_study.submit_seconds < 30
    assert slurm_study.right_after['kd-mixup-i seed0']['state'] in ('pending', 'running')
    record = json.loads((slurm_study.root/'smoke'/'slurm.json').read_text())
    assert [job['job_id'] for job in record['jobs']] == [job_ids[name] for name in names]
    assert record['options']['time'] == '00:10:00' and record['log_dir'] == str(slurm_study.root/'smoke'/'slurm')


def test_slurm_cluster_runs_equal_the_local_runs(slurm_study):
    assert [outcome['state'] for outcome in slurm_study.local] == ['finished', 'finished']
    for name in ('teacher', 'kd-mixup-i'):
        assert slurm_study.statuses[f'{name} seed0']['state'] == 'finished'
        folder = slurm_study.root/'smoke'/name/'seed0'
        # the same papermill notebook into the same folder as the local runner
        assert {'run.ipynb', 'run.log', 'parameters.json', 'metrics.json'} <= {path.name for path in folder.iterdir()}
        assert history(folder) == history(slurm_study.local_root/'smoke'/name/'seed0')


def test_slurm_cluster_failed_teacher_is_reported_and_its_student_cancelled(slurm_study):
    teacher, student = slurm_study.statuses['teacher seed1'], slurm_study.statuses['kd-mixup-i seed1']
    assert teacher['state'] == 'failed' and 'corrupt or truncated' in teacher['detail']
    run_log = slurm_study.root/'smoke'/'teacher'/'seed1'/'run.log'
    assert str(run_log) in teacher['detail'] and Path(teacher['log']).is_file()
    assert f"(Slurm log: {teacher['log']})" in slurm.status_line(teacher)
    assert student['state'] == 'cancelled'
    assert student['detail'] == f"not started: its teacher (teacher seed1, job {teacher['job_id']}) failed"
    # Slurm itself cancelled the student (kill_on_invalid_dep) rather than leaving it pending
    assert slurm.queue_states([student['job_id']])[student['job_id']] == ('CANCELLED', 'DependencyNeverSatisfied', 0)
    assert not (slurm_study.root/'smoke'/'kd-mixup-i'/'seed1').exists()
    follow = subprocess.run([sys.executable, '-m', 'isokd.slurm', str(slurm_study.root/'smoke')], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert follow.returncode == 1, follow.stdout + follow.stderr
    assert teacher['log'] in follow.stdout and 'cancelled: kd-mixup-i seed1' in follow.stdout
    assert 'failed: teacher seed1' in follow.stdout


def test_slurm_cluster_second_submission_skips_everything(slurm_study, capsys):
    jobs_before = slurm_job_ids()
    for root in (slurm_study.root, slurm_study.local_root):
        # the Slurm runs and the local runs alike are finished: nothing is submitted
        assert slurm.run_slurm(command_line('--executor', 'slurm'), plan('smoke', 1, 'kd-mixup-i', root)) == 0
        printed = capsys.readouterr().out
        assert printed.count('finished: not submitted') == 2 and '0 run(s) submitted' in printed
        record = json.loads((root/'smoke'/'slurm.json').read_text())
        assert [job['job_id'] for job in record['jobs']] == [None, None]
        assert [status['state'] for status in slurm.slurm_status(root/'smoke')] == ['skipped', 'skipped']
    assert slurm_job_ids() == jobs_before


def test_slurm_cluster_refuses_to_submit_over_live_jobs(slurm_cluster, tmp_path):
    sleeper = ['sbatch', '--parsable', '--time=1', f'--output={tmp_path}/sleep.out', '--wrap', 'sleep 60']
    submitted = subprocess.run(sleeper, capture_output=True, text=True)
    # sbatch's own error text, where it refuses the job
    assert submitted.returncode == 0, f"sbatch failed (exit {submitted.returncode}): {submitted.stderr.strip()}"
    job_id = submitted.stdout.strip()
    try:
        jobs = plan('smoke', 1, 'teacher', tmp_path)
        live = slurm.job_record(jobs[0], tmp_path/'smoke'/'slurm', job_id)
        (tmp_path/'smoke').mkdir()
        (tmp_path/'smoke'/'slurm.json').write_text(json.dumps(dict(jobs=[live])))
        with pytest.raises(RuntimeError, match=f"still in Slurm: teacher seed0 \\(job {job_id}, .*scancel {job_id}"):
            slurm.submit_study(jobs)
        assert not (tmp_path/'smoke'/'teacher').exists()
    finally:
        subprocess.run(['scancel', job_id], check=True)


# ---- time limits, preemption, requeues (a live Slurm) --------------------------------------------------------------

# Slurm sends a job's signal at its first look at time limits (every 30 s) that is within the signal's delay + 30 s of
# the limit: with a delay of 1 s and a one-minute limit, 30 to 60 s into each run (a requeued job starts a few seconds
# after a look, so about 55 s). At about 1.5 s an epoch the teacher then needs two or three requeues, and the bounded
# teacher cannot finish before its first signal.
TEACHER_EPOCHS, STUDENT_EPOCHS, BOUNDED_EPOCHS = 50, 8, 100


def longer(jobs, teacher_epochs: int, student_epochs: int = 1):
    "The smoke plan's jobs with more epochs."
    for job in jobs:
        if job.kind == 'teacher':
            job.params['epochs'] = teacher_epochs
        else:
            job.params |= dict(epochs=student_epochs, teacher_epochs=teacher_epochs)
    return jobs


@contextlib.contextmanager
def requeued_jobs_start_at_once():
    """Slurm holds a requeued job for about two minutes (reason BeginTime) before it may start again; a thread lets
    each one start at once, so that several requeues fit in a test."""
    stop = threading.Event()

    def hasten():
        while not stop.wait(1):
            pending = subprocess.run(['squeue', '--noheader', '--states=PENDING', '--format=%i|%r'],
                                     capture_output=True, text=True).stdout.split()
            for job_id in (line.split('|')[0] for line in pending if line.endswith('|BeginTime')):
                subprocess.run(['scontrol', 'update', f'JobId={job_id}', 'StartTime=now'], capture_output=True)

    thread = threading.Thread(target=hasten, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def requeue_after_an_epoch(record: dict, timeout_s: float = 600) -> int:
    "`scontrol requeue` the running job of `record` once its run has finished an epoch; return the epochs it had."
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        metrics = planning.read_metrics(record['folder'])
        state = (slurm.queue_states([record['job_id']]) or {}).get(record['job_id'], ('',))[0]
        if metrics and metrics['history'] and not metrics['finished'] and state == 'RUNNING':
            subprocess.run(['scontrol', 'requeue', record['job_id']], check=True)
            return len(metrics['history'])
        time.sleep(0.5)
    raise TimeoutError(f"{record['name']} did not run an epoch within {timeout_s} s")


@pytest.fixture(scope='module')
def requeue_study(slurm_cluster, tmp_path_factory):
    """A teacher and its student that outlast a one-minute time limit, submitted to Slurm, the student also requeued
    from outside once it has finished an epoch; beside them a teacher allowed no requeue; and the same teacher and
    student run locally meanwhile, uninterrupted. Followed until every Slurm job has ended."""
    root, bounded_root, local_root = (tmp_path_factory.mktemp(name) for name in ('requeue', 'bounded', 'local'))
    printed = io.StringIO()
    with requeued_jobs_start_at_once(), contextlib.redirect_stdout(printed), ThreadPoolExecutor(1) as pool:
        submitted = slurm.submit_study(longer(plan('smoke', 1, 'kd-mixup-i', root), TEACHER_EPOCHS, STUDENT_EPOCHS),
                                       time='00:01:00', signal_delay_s=1)
        bounded = slurm.submit_study(longer(plan('smoke', 1, 'teacher', bounded_root), BOUNDED_EPOCHS),
                                     time='00:01:00', signal_delay_s=1, max_requeues=0)
        local_jobs = longer(plan('smoke', 1, 'kd-mixup-i', local_root), TEACHER_EPOCHS, STUDENT_EPOCHS)
        local = pool.submit(lambda: [planning.run_job(job) for job in local_jobs])
        epochs_at_requeue = requeue_after_an_epoch(submitted[1])
        # generous bounds: with pytest's other worker beside them, the jobs share two cores with its tests
        statuses = slurm.wait_study(root/'smoke', poll_s=1, timeout_s=600)
        bounded_statuses = slurm.wait_study(bounded_root/'smoke', poll_s=1, timeout_s=120, echo=False)
        local = local.result()
    queue = slurm.queue_states(record['job_id'] for record in submitted + bounded)
    return SimpleNamespace(root=root, bounded_root=bounded_root, local_root=local_root, submitted=submitted,
                           bounded=bounded[0], local=local, epochs_at_requeue=epochs_at_requeue,
                           printed=printed.getvalue(), queue=queue,
                           statuses={status['name']: status for status in statuses},
                           bounded_status=bounded_statuses[0])


def test_slurm_cluster_time_limits_requeue_the_runs_to_the_uninterrupted_metrics(requeue_study):
    assert [outcome['state'] for outcome in requeue_study.local] == ['finished', 'finished']
    teacher, student = requeue_study.submitted
    # the teacher met its time limit and requeued itself, keeping its Slurm id: its student waited for it (afterok)
    assert requeue_study.queue[teacher['job_id']][:2] == ('COMPLETED', 'None')
    assert requeue_study.queue[teacher['job_id']][2] >= 1
    assert student['after'] == teacher['job_id']
    for name in ('teacher', 'kd-mixup-i'):
        assert requeue_study.statuses[f'{name} seed0']['state'] == 'finished'
        run = Path('smoke')/name/'seed0'
        assert history(requeue_study.root/run) == history(requeue_study.local_root/run)


def test_slurm_cluster_a_requeued_student_resumes_and_says_so(requeue_study):
    teacher, student = requeue_study.submitted
    assert 1 <= requeue_study.epochs_at_requeue < STUDENT_EPOCHS
    # (Slurm may still list it as running for a moment after its result is written)
    assert requeue_study.queue[student['job_id']][2] >= 1
    # python -m isokd.slurm (`wait_study` prints its lines) showed it waiting, then running again, requeued
    lines = requeue_study.printed.splitlines()
    again = [line for line in lines if line.startswith('kd-mixup-i seed0') and 'requeued 1 time)' in line]
    assert any(' running ' in line for line in again), '\n'.join(lines)


def test_slurm_cluster_the_requeue_bound_fails_the_job_with_its_message(requeue_study):
    status, record = requeue_study.bounded_status, requeue_study.bounded
    assert status['state'] == 'failed', status
    pattern = (r"teacher seed0 reached its time limit or was preempted after 0 requeue\(s\), the bound "
               r"\(--max-requeues 0\): not requeued again; its last finished epoch is (\d+) of 100 \(checkpoint in ")
    found = re.match(pattern, status['detail'])
    assert found, status['detail']
    metrics = planning.read_metrics(record['folder'])
    assert int(found[1]) == (len(metrics['history']) if metrics else 0) < BOUNDED_EPOCHS
    assert requeue_study.queue[record['job_id']][0] == 'FAILED'
    assert f"(Slurm log: {record['log']})" in slurm.status_line(status)


# ---- without Slurm ---------------------------------------------------------------------------------------------------

def test_torchrun_command_runs_the_same_configuration(tmp_path):
    teacher, student = plan('smoke', 1, 'kd-cutmix-p', tmp_path)
    command = planning.torchrun_command(student, 4)
    assert Path(command[0]).name == 'torchrun' and command[1:7] == ['--standalone', '--nproc_per_node', '4', '-m',
                                                                      'isokd.launch', 'kd']
    assert command[7::3] == ['-p'] * len(student.params) and command[8::3] == list(student.params)
    # isokd.launch reads back the configuration the papermill notebook would get
    assert parse_args(command[6:]) == student.run_config()
    assert parse_args(planning.torchrun_command(teacher, 2)[6:]) == teacher.run_config()


def test_a_slurm_job_runs_papermill_or_torchrun_and_fails_with_its_run(tmp_path, monkeypatch):
    job = plan('smoke', 1, 'teacher', tmp_path)[0]
    commands = []
    def fake_run(command, **kwargs):
        commands.append((Path(command[0]).name, command[1:3], kwargs['env']['OMP_NUM_THREADS']))
        if len(commands) > 1:
            kwargs['stdout'].write('Traceback\nValueError: boom\n')
        return subprocess.CompletedProcess(command, 0 if len(commands) == 1 else 1)
    # papermill writes no metrics here: the first call is made to look finished, the second fails with its log
    monkeypatch.setattr(planning.subprocess, 'run', fake_run)
    monkeypatch.setattr(planning, 'read_metrics', lambda folder: {'finished': True} if len(commands) == 1 else None)
    assert slurm.SlurmRun(job, 4, 1)()['state'] == 'finished'
    with pytest.raises(RuntimeError, match=r'^ValueError: boom \(log: .*run.log\)$'):
        slurm.SlurmRun(job, 4, 2)()
    # one papermill process with the 4 threads; torchrun with 2 processes of 2 threads each
    assert commands == [(Path(sys.executable).name, ['-m', 'papermill'], '4'),
                        ('torchrun', ['--standalone', '--nproc_per_node'], '2')]


@pytest.mark.parametrize('value, minutes', [('24:00:00', 1440), ('72:00:00', 4320), ('00:00:30', 1), ('0:10:00', 10)])
def test_time_limit_is_hh_mm_ss(value, minutes):
    assert slurm.time_limit_minutes(value) == minutes


@pytest.mark.parametrize('value', ['24h', '24:00', '1:60:00', '00:00:00', '1-00:00:00', '-1:00:00', ''])
def test_bad_time_limit_fails_before_anything_is_written(value, tmp_path):
    with pytest.raises(ValueError, match=f"--time '{value}' is not valid: give one run's time limit as HH:MM:SS"):
        # --time=VALUE: argparse would take a VALUE starting with '-' for an option
        slurm.run_slurm(command_line('--executor', 'slurm', f'--time={value}'), plan('smoke', 1, 'teacher', tmp_path))
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize('args, message', [
    (('--executor', 'slurm', '--gpus-per-run', '-1'), "--gpus-per-run '-1' is not valid"),
    (('--executor', 'slurm', '--gpus-per-run', '3'), 'batch_size=64 (the global batch) does not split evenly over 3'),
    (('--executor', 'slurm', '--slurm-arg', 'account'), "--slurm-arg 'account' is not valid"),
    (('--executor', 'slurm', '--slurm-arg', 'partition=gpu'), 'isokd sets --partition itself (use --partition)'),
    (('--executor', 'slurm', '--partition', 'a b'), "--partition 'a b' is not valid"),
    (('--time', '01:00:00',), '--time only apply with --executor slurm'),
])
def test_bad_slurm_options_fail_before_anything_is_written(args, message, tmp_path):
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace(')', r'\)')):
        slurm.run_slurm(command_line(*args), plan('smoke', 1, 'teacher', tmp_path))
    assert not any(tmp_path.iterdir())


def test_check_slurm_fails_clearly_without_slurm(tmp_path, monkeypatch):
    monkeypatch.setenv('PATH', '')
    with pytest.raises(RuntimeError, match='Slurm is not available on this machine: sbatch, srun, squeue, scontrol '
                                           'not on PATH'):
        slurm.check_slurm()
    with pytest.raises(RuntimeError, match='Slurm is not available on this machine'):
        slurm.run_slurm(command_line('--executor', 'slurm'), plan('smoke', 1, 'kd', tmp_path))
    assert not any(tmp_path.iterdir())
    # Slurm's commands, but a controller that does not answer
    for command in slurm.SLURM_COMMANDS:
        (tmp_path/command).write_text('#!/bin/sh\necho "Slurmctld(primary) at head is DOWN"\nexit 1\n')
        (tmp_path/command).chmod(0o755)
    monkeypatch.setenv('PATH', str(tmp_path))
    with pytest.raises(RuntimeError, match="controller does not answer: `scontrol ping` says 'Slurmctld.primary. at "
                                           "head is DOWN'"):
        slurm.check_slurm()
