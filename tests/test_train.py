"Training runs end to end: papermill, resume after kill -9, refusals of bad input."
import dataclasses, json, os, signal, subprocess, sys, time
from pathlib import Path

import pytest
import torch

from isokd.train import distill, read_metrics, KDConfig
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
    from isokd.train import KDConfig
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
        import shutil; shutil.rmtree(ROOT/name, ignore_errors=True)

_RUN = """
import sys; sys.path.insert(0, {tests!r})
from isokd.train import distill
distill(out_dir={out!r}, calibration='isotonic_appr', progress=False, **{params!r})
"""

def _run(out, params, **kw):
    code = _RUN.format(tests=str(ROOT/'tests'), out=str(out), params=params)
    return subprocess.Popen([sys.executable, '-c', code], cwd=ROOT, **kw)

def test_killed_run_resumes_to_identical_metrics(tmp_path, tiny):
    params = tiny | dict(epochs=4, n_train=None)
    teacher = tmp_path/'teacher'
    params['teacher_path'] = str(teacher/'model.pt')
    from isokd.train import train_teacher
    train_teacher(dataset='synthetic', arch='resnet8', epochs=1, device='cpu', out_dir=str(teacher), progress=False)
    assert _run(tmp_path/'whole', params).wait(600) == 0
    p = _run(tmp_path/'killed', params)
    ckpt = tmp_path/'killed'/'checkpoint.pt'
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and p.poll() is None: time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be killed"
    p.send_signal(signal.SIGKILL); p.wait()
    m = read_metrics(tmp_path/'killed')
    assert m is not None and not m['finished'] and 1 <= len(m['history']) < 4
    assert _run(tmp_path/'killed', params).wait(600) == 0
    whole, resumed = read_metrics(tmp_path/'whole'), read_metrics(tmp_path/'killed')
    assert resumed['finished'] and _strip(resumed) == _strip(whole)
    assert resumed['test_acc_last'] == whole['test_acc_last']

@pytest.mark.parametrize('param,value,message', [
    ('alpha', 1.5, 'alpha=1.5'),
    ('mixup', 'mixpu', "mixup='mixpu'"),
])
def test_bad_parameters_fail_through_papermill_before_training(tmp_path, param, value, message):
    t0 = time.time()
    r = papermill('run_kd.ipynb', tmp_path/'out.ipynb', out_dir=tmp_path/'kd', **{param: value})
    assert r.returncode != 0 and message in r.stderr + r.stdout
    assert not (tmp_path/'kd').exists() and time.time() - t0 < 60

def test_bad_parameters_fail_fast(tmp_path):
    for bad, msg in [(dict(calibration='isotonic', mixup='none'), 'needs mixed images'),
                     (dict(dataset='imagenet'), "dataset='imagenet'"), (dict(arch='resnet9'), "arch='resnet9'"),
                     (dict(temperature=-1.), 'temperature=-1'), (dict(soft_constraint_ratio=-2), 'soft_constraint_ratio=-2'),
                     (dict(epochs=0), 'epochs=0'), (dict(isotonic_mode='both'), "isotonic_mode='both'"),
                     (dict(calibration='iso'), "calibration='iso'")]:
        with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace('[', r'\[')):
            distill(out_dir=str(tmp_path/'x'), **bad)
    assert not (tmp_path/'x').exists()

def test_missing_teacher_without_training_names_the_command(tmp_path, tiny):
    with pytest.raises(FileNotFoundError, match='papermill nbs/run_teacher.ipynb'):
        distill(out_dir=str(tmp_path/'kd'), train_teacher_if_missing=False, teacher_seed=12345, **tiny)

def test_teacher_without_weights_is_trained_again(tmp_path, tiny, capsys):
    "A clone carries a teacher's metrics.json but not its model.pt: the teacher is retrained, not trusted."
    from isokd.train import train_teacher
    cfg = KDConfig(**tiny).teacher_config()
    train_teacher(progress=False, **dataclasses.asdict(cfg))
    (cfg.path/'model.pt').unlink()
    m = distill(out_dir=str(tmp_path/'kd'), progress=False, **(tiny | dict(epochs=1)))
    assert m['finished'] and (cfg.path/'model.pt').is_file() and 'model.pt is missing' in capsys.readouterr().out
