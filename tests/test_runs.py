"Training runs end to end: papermill, resume after kill -9, refusals of bad input."
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from isokd.config import KDConfig
from isokd.runs import distill, read_metrics
from conftest import ROOT, papermill

def _strip(m):
    "The metrics a rerun must reproduce exactly: everything but wall-clock times."
    return [{k: v for k, v in r.items() if k not in ('seconds', 'images_per_s')} for r in m['history']]

def test_papermill_tiny_kd_run(tmp_path, tiny):
    out = tmp_path/'kd'
    r = papermill('run_kd.ipynb', tmp_path/'out.ipynb', calibration='isotonic', out_dir=out, **tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    m = read_metrics(out)
    assert m['finished'] and m['method'] == 'KD-i' and len(m['history']) == 2
    assert m['params']['calibration'] == 'isotonic' and m['versions']['torch'] == torch.__version__
    assert 0 <= m['test_acc_last'] <= m['test_acc_best'] <= 1
    nb = json.loads((tmp_path/'out.ipynb').read_text())
    assert any('injected-parameters' in c['metadata'].get('tags', []) for c in nb['cells'])

def test_papermill_without_output_notebook_from_the_root(tiny):
    "The user's form `papermill nbs/run_kd.ipynb -p calibration isotonic`: results land in the runs folder."
    from isokd.config import KDConfig
    params = tiny | dict(calibration='isotonic', epochs=1)
    r = papermill('run_kd.ipynb', None, **params)
    assert r.returncode == 0, r.stderr[-3000:]
    assert '"cells"' in r.stdout                      # papermill printed the executed notebook
    out = KDConfig(**params).path
    assert out.parent.parent == Path(os.environ['ISOKD_RUNS']) and read_metrics(out)['finished']

def test_relative_out_dir_resolves_against_the_project_root_from_nbs(tmp_path, tiny):
    name = f'runs/_test_cwd_{os.getpid()}'
    try:
        r = papermill('run_teacher.ipynb', tmp_path/'t.ipynb', cwd=ROOT/'nbs', out_dir=name, dataset='synthetic',
                      arch='resnet8', epochs=1, device='cpu')
        assert r.returncode == 0, r.stderr[-3000:]
        assert read_metrics(ROOT/name)['finished'] and not (ROOT/'nbs'/'runs').exists()
    finally:
        import shutil
        shutil.rmtree(ROOT/name, ignore_errors=True)

def test_killed_papermill_run_resumes_to_identical_metrics(tmp_path, tiny):
    "kill -9 of the whole papermill job mid-epoch, then the same command again: the metrics of an uninterrupted run."
    from isokd.runs import train_teacher
    train_teacher(dataset='synthetic', arch='resnet8', epochs=1, device='cpu', out_dir=str(tmp_path/'teacher'),
                  progress=False)
    params = tiny | dict(epochs=4, calibration='isotonic_appr', teacher_path=str(tmp_path/'teacher'))
    assert papermill('run_kd.ipynb', tmp_path/'w.ipynb', out_dir=tmp_path/'whole', **params).returncode == 0
    args = ([sys.executable, '-m', 'papermill', str(ROOT/'nbs'/'run_kd.ipynb'), str(tmp_path/'k.ipynb'),
             '--no-progress-bar', '-p', 'out_dir', str(tmp_path/'killed')]
            + [a for k, v in params.items() for a in ('-p', k, str(v))])
    p = subprocess.Popen(args, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # metrics.json is written right after the first checkpoint: killed before it, the run would have no record
    record, deadline = tmp_path/'killed'/'metrics.json', time.time() + 300
    while not record.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be killed"
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()                     # papermill and its kernel, as kill -9 of the job
    m = read_metrics(tmp_path/'killed')
    assert m is not None and not m['finished'] and 1 <= len(m['history']) < 4
    r = papermill('run_kd.ipynb', tmp_path/'k.ipynb', out_dir=tmp_path/'killed', **params)
    assert r.returncode == 0, r.stderr[-3000:]
    whole, resumed = read_metrics(tmp_path/'whole'), read_metrics(tmp_path/'killed')
    assert resumed['finished'] and _strip(resumed) == _strip(whole)

def test_non_finite_loss_stops_naming_epoch_and_step_and_keeps_the_checkpoint(tmp_path, tiny, monkeypatch):
    import isokd.functional
    calls, kd_div = [0], isokd.functional.kd_div
    def poisoned(*a):
        calls[0] += 1
        return kd_div(*a) * (float('nan') if calls[0] == 11 else 1.)   # 8 steps an epoch: epoch 2, step 3
    monkeypatch.setattr(isokd.functional, 'kd_div', poisoned)
    with pytest.raises(FloatingPointError, match='epoch 2, step 3'):
        distill(out_dir=str(tmp_path/'kd'), progress=False, **tiny)
    m = read_metrics(tmp_path/'kd')
    assert not m['finished'] and len(m['history']) == 1
    assert torch.load(tmp_path/'kd'/'checkpoint.pt', weights_only=True)['epoch'] == 1

def test_corrupt_checkpoint_is_reported_with_its_path(tmp_path, tiny, monkeypatch):
    import isokd.functional
    # stop after nothing is finished
    monkeypatch.setattr(isokd.functional, 'kd_div', lambda *a: torch.tensor(float('inf')))
    with pytest.raises(FloatingPointError):
        distill(out_dir=str(tmp_path/'kd'), progress=False, **tiny)
    monkeypatch.undo()
    from isokd.core import atomic_save
    atomic_save({'epoch': 1}, tmp_path/'kd'/'checkpoint.pt')
    data = (tmp_path/'kd'/'checkpoint.pt').read_bytes()
    (tmp_path/'kd'/'checkpoint.pt').write_bytes(data[:len(data) // 2])                 # truncated
    with pytest.raises(RuntimeError, match=f"checkpoint {tmp_path/'kd'/'checkpoint.pt'} is corrupt or truncated"):
        distill(out_dir=str(tmp_path/'kd'), progress=False, **tiny)

def test_second_run_on_one_folder_is_refused_and_a_stale_lock_is_not(tmp_path, tiny):
    from isokd.runs import run_lock
    with run_lock(tmp_path/'kd'):
        with pytest.raises(RuntimeError, match='in use by another running process'):
            distill(out_dir=str(tmp_path/'kd'), progress=False, **tiny)
    assert (tmp_path/'kd'/'.lock').exists()                    # left behind, as by a killed run: no obstacle
    assert distill(out_dir=str(tmp_path/'kd'), progress=False, **(tiny | dict(epochs=1)))['finished']

def test_overwrite_reruns_a_finished_run(tmp_path, tiny, capsys):
    m = distill(out_dir=str(tmp_path/'kd'), progress=False, **(tiny | dict(epochs=1)))
    again = distill(out_dir=str(tmp_path/'kd'), progress=False, **(tiny | dict(epochs=1)))
    assert 'already holds this finished run' in capsys.readouterr().out and again == m
    redo = distill(out_dir=str(tmp_path/'kd'), progress=False, overwrite=True, **(tiny | dict(epochs=2)))
    assert redo['finished'] and len(redo['history']) == 2

BAD_INPUT = {  # what a user can get wrong in run_kd.ipynb, and the error they meet (the README's reliability table)
    'alpha out of range': (dict(alpha=1.5), 'alpha=1.5 is not valid'),
    'unknown mixup': (dict(mixup='mixpu'), "mixup='mixpu' is not valid"),
    'calibration without mixing': (dict(mixup='none', calibration='isotonic'), 'needs mixed images'),
    'dataset not downloadable': (dict(dataset='cifar10', data_root='{tmp}/none', train_teacher_if_missing=False,
                                      teacher_path='{tmp}/teacher/model.pt'), 'cifar-10-python.tar.gz'),
    'missing teacher, training off': (dict(dataset='synthetic', train_teacher_if_missing=False, teacher_seed=99),
                                      'papermill nbs/run_teacher.ipynb'),
    # a teacher of the 3-channel synthetic set for 1-channel Fashion-MNIST
    'teacher of another dataset': (dict(dataset='fashion_mnist', teacher_arch='resnet8',
                                        teacher_path='{tmp}/teacher/model.pt'), 'does not fit'),
}

@pytest.mark.parametrize('case', sorted(BAD_INPUT))
def test_bad_input_fails_through_papermill_before_training(tmp_path, case):
    from isokd.runs import train_teacher
    params, message = BAD_INPUT[case]
    params = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in params.items()}
    if 'teacher_path' in params:   # a real 10-class teacher
        train_teacher(dataset='synthetic', arch='resnet8', epochs=1, device='cpu', out_dir=str(tmp_path/'teacher'),
                      progress=False)
    t0 = time.time()
    r = papermill('run_kd.ipynb', tmp_path/'out.ipynb', out_dir=tmp_path/'kd', **params)
    assert r.returncode != 0 and message in r.stderr + r.stdout, (r.stderr + r.stdout)[-2000:]
    assert read_metrics(tmp_path/'kd') is None and time.time() - t0 < 60

def test_bad_parameters_fail_fast(tmp_path):
    for bad, msg in [(dict(calibration='isotonic', mixup='none'), 'needs mixed images'),
                     (dict(dataset='places365'), "dataset='places365'"), (dict(arch='resnet9'), "arch='resnet9'"),
                     (dict(temperature=-1.), 'temperature=-1'),
                     (dict(soft_constraint_ratio=-2), 'soft_constraint_ratio=-2'),
                     (dict(epochs=0), 'epochs=0'), (dict(isotonic_mode='both'), "isotonic_mode='both'"),
                     (dict(calibration='iso'), "calibration='iso'")]:
        with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace('[', r'\[')):
            distill(out_dir=str(tmp_path/'x'), **bad)
    # a streamed dataset whose folder is missing: named before anything is written
    with pytest.raises(FileNotFoundError, match=r'imagenet/train is not a folder'):
        distill(out_dir=str(tmp_path/'x'), dataset='imagenet', data_root=str(tmp_path/'nodata'),
                arch='resnet18_imagenet', teacher_arch='resnet34_imagenet')
    assert not (tmp_path/'x').exists()

def test_missing_teacher_without_training_names_the_command(tmp_path, tiny):
    with pytest.raises(FileNotFoundError, match='papermill nbs/run_teacher.ipynb'):
        distill(out_dir=str(tmp_path/'kd'), train_teacher_if_missing=False, teacher_seed=12345, **tiny)

def test_teacher_without_weights_is_trained_again(tmp_path, tiny, capsys):
    "A clone carries a teacher's metrics.json but not its model.pt: the teacher is retrained, not trusted."
    from isokd.runs import train_teacher
    cfg = KDConfig(**tiny).teacher_config()
    train_teacher(progress=False, **dataclasses.asdict(cfg))
    (cfg.path/'model.pt').unlink()
    m = distill(out_dir=str(tmp_path/'kd'), progress=False, **(tiny | dict(epochs=1)))
    assert m['finished'] and (cfg.path/'model.pt').is_file() and 'model.pt is missing' in capsys.readouterr().out

def test_each_seed_trains_on_its_own_subset(tmp_path, tiny, monkeypatch):
    "`run` loads the training subset of the run's seed (01_data: each seed its own, stratified alike)."
    import isokd.runs
    seeds, load = [], isokd.runs.load_data
    monkeypatch.setattr(isokd.runs, 'load_data', lambda *a, **k: seeds.append(k.get('seed')) or load(*a, **k))
    distill(out_dir=str(tmp_path/'kd'), progress=False, **(tiny | dict(epochs=1, n_train=200, seed=3)))
    assert seeds[0] == 3

def test_a_committed_studys_teacher_serves_runs_without_a_teacher_path(tmp_path, tiny, monkeypatch, capsys):
    "A teacher committed with a study (runs/<scale>/teacher/seed<k>/, weights included) is found by its identity."
    from isokd.runs import train_teacher
    from isokd.core import file_sha256
    project = tmp_path/'project'
    project.mkdir()
    (project/'settings.ini').write_text('[DEFAULT]\nlib_name = isokd\n')
    monkeypatch.chdir(project)
    shipped = project/'runs'/'cpu'/'teacher'/'seed0'
    tcfg = KDConfig(**tiny).teacher_config()
    teacher = train_teacher(progress=False, **(dataclasses.asdict(tcfg) | dict(out_dir=str(shipped))))
    assert teacher['model_sha256'] == file_sha256(shipped/'model.pt')
    m = distill(out_dir=str(tmp_path/'kd'), progress=False, **(tiny | dict(epochs=1)))
    assert "Using the committed study's teacher runs/cpu/teacher/seed0" in capsys.readouterr().out
    assert m['teacher']['model_sha256'] == teacher['model_sha256']
    # weights that are not the ones the teacher's metrics record are refused
    torch.save(torch.load(shipped/'model.pt') | {'fc.bias': torch.zeros(10)}, shipped/'model.pt')
    with pytest.raises(ValueError, match='is not the model its metrics.json records'):
        distill(out_dir=str(tmp_path/'kd2'), progress=False, **(tiny | dict(epochs=1)))

def test_evaluation_on_a_schedule_leaves_the_trained_model_as_it_is(tmp_path, tiny):
    "eval_every evaluates every N epochs and after the last; the weights equal those of a run evaluated every epoch."
    every = distill(out_dir=str(tmp_path/'every'), progress=False, **(tiny | dict(epochs=3, n_val=64)))
    sparse = distill(out_dir=str(tmp_path/'sparse'), progress=False, **(tiny | dict(epochs=3, n_val=64, eval_every=2)))
    assert sparse['model_sha256'] == every['model_sha256']
    assert [r['epoch'] for r in sparse['history'] if 'val_acc' in r] == [2, 3]
    assert [r['epoch'] for r in every['history'] if 'val_acc' in r] == [1, 2, 3]
    # the record of the epochs both evaluated is the same; the test set once, after the last epoch, in both
    assert sparse['history'][-1]['val_acc'] == every['history'][-1]['val_acc']
    assert sparse['test_acc_last'] == every['test_acc_last'] and sparse['val_acc_last'] == every['val_acc_last']
    # and eval_every is not part of the identity: the sparse run is the same run
    assert sparse['identity'] == every['identity']
