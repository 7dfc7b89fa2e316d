"The study runner as a user meets it: `python -m isokd.study` on the smoke scale, its failures and its bad input."
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from isokd.design import CONFIGS, README_CONFIGS, SCALES
from isokd.plan import plan
from conftest import ROOT

def study(*args, env=None):
    "Run the study's command line; return the CompletedProcess."
    return subprocess.run([sys.executable, '-m', 'isokd.study', *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env=dict(os.environ, **(env or {})))

def outcome_lines(out: str) -> dict:
    "The per-run lines of the runner's output: 'config seedK' -> state."
    lines = [line.split(']', 1)[1].split() for line in out.splitlines() if line.startswith('[')]
    return {f"{w[0]} {w[1]}": w[2] for w in lines}

def test_registry_names_every_readme_configuration():
    assert len(README_CONFIGS) == 15 and set(README_CONFIGS) < set(CONFIGS)
    assert set(SCALES) == {'paper', 'cpu', 'pairs', 'smoke', 'imagenet'}
    kinds = {n: (c['kind'], c.get('mixup'), c.get('calibration')) for n, c in CONFIGS.items()}
    assert kinds['kd'] == ('kd', 'none', 'none') and kinds['crd-mixup'] == ('crd', 'mixup', 'none')
    assert (kinds['kd-cutmix-i'] == ('kd', 'cutmix', 'isotonic')
            and kinds['crd-mixup-p'] == ('crd', 'mixup', 'isotonic_appr'))

def test_pairs_scale_plans_100_class_float32_students_of_one_teacher(tmp_path):
    jobs = plan('pairs', seeds=2, configs='teacher,kd-mixup-i,kd-mixup-i-T2', root=tmp_path)
    assert [j.name for j in jobs] == ['teacher seed0', 'kd-mixup-i seed0', 'kd-mixup-i-T2 seed0', 'kd-mixup-i seed1',
                                      'kd-mixup-i-T2 seed1']
    t, s, s2 = (j.run_config() for j in jobs[:3])
    assert (t.dataset, t.arch, t.epochs, t.n_train, t.bf16) == ('fashion-pairs', 'resnet14', 15, None, False)
    assert (s.dataset, s.arch, s.teacher_arch, s.n_train, s.epochs, s.bf16) == \
           ('fashion-pairs', 'resnet8', 'resnet14', 2500, 60, False)
    assert (s.temperature, s2.temperature, s2.calibration, s2.isotonic_mode) == (4.5, 2.0, 'isotonic', 'add')
    # every student of every seed distils from the one teacher
    assert {j.params['teacher_path'] for j in jobs[1:]} == {jobs[0].params['out_dir']}

def test_paper_scale_is_the_authors_setting(tmp_path):
    jobs = {j.config: j.run_config() for j in plan('paper', seeds=1, root=tmp_path)}
    t, s, c = jobs['teacher'], jobs['kd-mixup-i'], jobs['crd-cutmix-p']
    assert (t.dataset, t.arch, t.epochs) == ('cifar100', 'resnet50', 200)
    assert (s.arch, s.teacher_arch, s.epochs, s.batch_size, s.lr, s.temperature, s.alpha, s.soft_constraint_ratio) == \
           ('resnet18', 'resnet50', 200, 128, 0.1, 4.5, 0.95, 2.0)
    assert (c.beta, c.feat_dim, c.nce_n, c.nce_t, c.nce_m, c.mixup, c.calibration) == \
           (0.8, 128, 16384, 0.07, 0.5, 'cutmix', 'isotonic_appr')

SMOKE = ('--scale', 'smoke', '--seeds', 1, '--configs', 'kd-mixup-i,crd-cutmix-p')

@pytest.fixture(scope='module')
def smoke_study(tmp_path_factory):
    "A smoke study of a teacher and two students, run once for the tests below: (its root, the runner's output)."
    root = tmp_path_factory.mktemp('study')
    r = study(*SMOKE, '--root', root, '--workers', 2)
    assert r.returncode == 0, r.stdout + r.stderr
    return root, r.stdout

def test_smoke_study_runs_every_job_into_its_folder_and_reports(smoke_study):
    root, out = smoke_study
    assert outcome_lines(out) == {'teacher seed0': 'finished', 'kd-mixup-i seed0': 'finished',
                                  'crd-cutmix-p seed0': 'finished'}
    for name in ('teacher', 'kd-mixup-i', 'crd-cutmix-p'):
        d = root/'smoke'/name/'seed0'
        assert {'run.ipynb', 'metrics.json', 'parameters.json'} <= {p.name for p in d.iterdir()}
        m = json.loads((d/'metrics.json').read_text())
        assert m['finished'] and m['params']['out_dir'] == str(d)
    student = json.loads((root/'smoke'/'kd-mixup-i'/'seed0'/'metrics.json').read_text())
    assert (student['method'] == 'KD-i'
            and Path(student['teacher']['path']) == root/'smoke'/'teacher'/'seed0'/'model.pt')
    assert set(json.loads((root/'smoke'/'teacher'/'seed0'/'metrics.json').read_text())['order_profile']) == \
           {'clean', 'mixup', 'cutmix'}
    for f in ('report.ipynb', 'README.md', 'results.csv', 'teacher_order.png', 'curves.png', 'teacher_ir.csv'):
        assert (root/'smoke'/f).is_file(), f

def test_a_finished_study_is_skipped_and_compares_with_itself(smoke_study):
    root, _ = smoke_study
    again = study(*SMOKE, '--root', root, '--no-report', '--compare-with', root/'smoke')
    assert again.returncode == 0 and '3 finished, 0 to run' in again.stdout
    # the runs against themselves: one seed gives no prediction interval; on the same CPU in the same precision every
    # run is the committed one to the bit
    assert 'no configuration has two committed seeds: no prediction interval to judge by' in again.stdout, again.stdout
    assert "3 of 3 runs of seed 0 here have the committed run's weights (sha256)" in again.stdout, again.stdout
    assert "the teacher trained here has the committed teacher's weights, to the bit (here on " in again.stdout
    assert set(outcome_lines(again.stdout).values()) == {'skipped'}

def test_a_teacher_without_weights_is_trained_again_to_the_same_numbers(smoke_study, tmp_path):
    # a fresh clone has the metrics but not the weights: a student to redo gets its teacher trained again
    shutil.copytree(smoke_study[0]/'smoke', tmp_path/'smoke')
    teacher_dir = tmp_path/'smoke'/'teacher'/'seed0'
    teacher = json.loads((teacher_dir/'metrics.json').read_text())
    (teacher_dir/'model.pt').unlink()
    (tmp_path/'smoke'/'kd-mixup-i'/'seed0'/'metrics.json').unlink()
    redo = study('--scale', 'smoke', '--seeds', 1, '--configs', 'kd-mixup-i', '--root', tmp_path, '--no-report')
    assert redo.returncode == 0, redo.stdout + redo.stderr
    assert (outcome_lines(redo.stdout) == {'teacher seed0': 'finished', 'kd-mixup-i seed0': 'finished'}
            and 'model.pt is missing' in redo.stdout)

    def numbers(m):
        return [(r['train_loss'], r['test_acc'], r['test_loss']) for r in m['history']]

    assert numbers(json.loads((teacher_dir/'metrics.json').read_text())) == numbers(teacher)

def test_a_failed_run_does_not_stop_the_others_and_its_students_wait(tmp_path):
    # a corrupt checkpoint makes teacher seed1 fail: its student is not started, seed 0 runs to the end, the exit
    # status is 1
    bad = tmp_path/'smoke'/'teacher'/'seed1'
    bad.mkdir(parents=True)
    (bad/'checkpoint.pt').write_bytes(b'not a checkpoint')
    r = study('--scale', 'smoke', '--seeds', 2, '--configs', 'kd-cutmix', '--root', tmp_path, '--workers', 2,
              '--no-report')
    assert r.returncode == 1, r.stdout + r.stderr
    lines = outcome_lines(r.stdout)
    assert lines == {'teacher seed0': 'finished', 'teacher seed1': 'failed',
                     'kd-cutmix seed0': 'finished', 'kd-cutmix seed1': 'failed'}
    assert 'corrupt or truncated' in r.stdout and str(bad/'run.log') in r.stdout
    assert 'not started: teacher seed1 failed' in r.stdout and 'failed: teacher seed1, kd-cutmix seed1' in r.stdout

@pytest.mark.parametrize('args, message', [
    (('--configs', 'kd,kd-mixup-x'),
     "unknown configuration 'kd-mixup-x'; valid names: readme (the README's fifteen), teacher, kd,"),
    (('--configs', ','), "unknown configuration ''"),
    (('--seeds', 0), 'seeds=0 is not valid; it must be an integer >= 1'),
    (('--workers', 0), 'workers=0 is not valid; it must be an integer >= 1'),
    (('--scale', 'laptop'), "unknown scale 'laptop'; valid scales: paper, cpu, smoke"),
])
def test_bad_input_fails_before_any_run(tmp_path, args, message):
    r = study('--root', tmp_path, *(('--scale', 'smoke') if '--scale' not in args else ()), *args)
    assert r.returncode == 2 and message in r.stderr, r.stdout + r.stderr
    assert not any(tmp_path.iterdir())

def test_missing_dataset_fails_before_any_run(tmp_path):
    r = study('--scale', 'paper', '--seeds', 1, '--configs', 'teacher', '--root', tmp_path/'runs',
              env=dict(ISOKD_DATA=str(tmp_path/'data')))
    assert r.returncode == 2 and 'cifar-100-python.tar.gz' in r.stderr, r.stdout + r.stderr
    assert not (tmp_path/'runs').exists()

def test_a_shared_teacher_serves_every_seed(tmp_path, monkeypatch):
    from isokd.design import Scale
    from isokd.plan import teacher_of
    smoke = SCALES['smoke']
    monkeypatch.setitem(SCALES, 'shared', Scale(smoke.teacher, smoke.student, smoke.crd, shared_teacher=True))
    jobs = plan('shared', seeds=3, configs='kd-mixup', root=tmp_path)
    assert [j.name for j in jobs] == ['teacher seed0', 'kd-mixup seed0', 'kd-mixup seed1', 'kd-mixup seed2']
    assert {teacher_of(j, jobs).name for j in jobs[1:]} == {'teacher seed0'}
    assert {j.params['teacher_seed'] for j in jobs[1:]} == {0} and [j.params['seed'] for j in jobs[1:]] == [0, 1, 2]

def test_students_distil_from_a_given_teacher_and_a_wrong_one_is_refused(smoke_study, tmp_path, monkeypatch):
    "make run's --teacher: the students of a shared-teacher scale distil from a finished teacher; none is trained."
    from isokd.design import Scale
    from isokd.study import run_study
    smoke = SCALES['smoke']
    monkeypatch.setitem(SCALES, 'shared', Scale(smoke.teacher, smoke.student, smoke.crd, shared_teacher=True))
    teacher = smoke_study[0]/'smoke'/'teacher'/'seed0'
    results = run_study('shared', 1, 'kd-mixup-i', tmp_path, workers=1, report=False, teacher=teacher)
    assert [(r['job'].name, r['state']) for r in results] == [('kd-mixup-i seed0', 'finished')]
    sha = json.loads((teacher/'metrics.json').read_text())['model_sha256']
    assert results[0]['metrics']['teacher']['model_sha256'] == sha and not (tmp_path/'shared'/'teacher').exists()
    monkeypatch.setitem(SCALES, 'longer', Scale(smoke.teacher | dict(epochs=2), smoke.student, shared_teacher=True))
    with pytest.raises(ValueError, match=r"differs in epochs \(1, not 2\)"):
        plan('longer', 1, 'kd', tmp_path, teacher=teacher)
    with pytest.raises(ValueError, match='trains a teacher per seed'):
        plan('smoke', 1, 'kd', tmp_path, teacher=teacher)

def test_a_committed_study_folder_refuses_a_dirty_tree(tmp_path, monkeypatch):
    "A study into a folder that git does not ignore needs a clean tree, or --allow-dirty, which every run records."
    from isokd.plan import check_clean
    (tmp_path/'settings.ini').write_text('[DEFAULT]\nlib_name = isokd\n')
    (tmp_path/'.gitignore').write_text('runs/local/\n')
    git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@localhost']
    for args in (['init', '-q'], ['add', '.'], ['commit', '-qm', 'a project']):
        subprocess.run(git + args, cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv('ISOKD_ALLOW_DIRTY', raising=False)
    check_clean(tmp_path/'runs'/'cpu')
    (tmp_path/'settings.ini').write_text('[DEFAULT]\nlib_name = isokd\n# changed\n')
    with pytest.raises(ValueError, match=r'uncommitted changes to tracked files \(settings.ini\): commit them first'):
        check_clean(tmp_path/'runs'/'cpu')
    # an ignored folder (make run's runs/local/) and a folder outside the project are not checked
    check_clean(tmp_path/'runs'/'local'/'cpu')
    check_clean(tmp_path.parent/'elsewhere')
    assert 'ISOKD_ALLOW_DIRTY' not in os.environ
    check_clean(tmp_path/'runs'/'cpu', allow_dirty=True)
    assert os.environ['ISOKD_ALLOW_DIRTY'] == '1'

def test_dry_run_says_what_will_run(tmp_path):
    r = study('--scale', 'smoke', '--seeds', 2, '--configs', 'kd', '--root', tmp_path, '--dry-run')
    assert r.returncode == 0
    assert '4 runs: 0 finished, 4 to run (4 new, 0 to resume, 0 teachers to train again)' in r.stdout
    assert not any(tmp_path.iterdir())

def test_slurm_flags_are_refused_with_the_local_executor(tmp_path):
    r = study('--scale', 'smoke', '--root', tmp_path, '--partition', 'gpu')
    assert r.returncode == 2 and 'executor' in r.stderr, r.stderr

def test_reproducing_a_committed_run_changes_no_file_of_the_study(tmp_path):
    """docs/reproducing.md's command, on a clone whose committed study lacks its teacher's weights: the teacher is
    trained again into the teacher cache and the student into its own folder; `git status` shows the study unchanged."""
    clone = tmp_path/'clone'
    subprocess.run(['git', 'clone', '-q', str(ROOT), str(clone)], check=True)
    env = dict(os.environ, ISOKD_RUNS=str(tmp_path/'cache'))
    made = subprocess.run([sys.executable, '-m', 'isokd.study', '--scale', 'smoke', '--seeds', '1', '--configs',
                           'kd-mixup-i', '--root', 'runs', '--no-report'], cwd=clone, capture_output=True, text=True,
                          env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@localhost']
    subprocess.run(git + ['add', 'runs/smoke'], cwd=clone, check=True)
    subprocess.run(git + ['commit', '-qm', 'a committed study'], cwd=clone, check=True)
    (clone/'runs'/'smoke'/'teacher'/'seed0'/'model.pt').unlink()

    def status():
        return subprocess.run(['git', 'status', '--porcelain', '--ignored', 'runs/smoke'], cwd=clone,
                              capture_output=True, text=True).stdout

    before = status()
    r = subprocess.run([str(Path(sys.executable).parent/'papermill'), 'nbs/run_kd.ipynb', str(tmp_path/'out.ipynb'),
                        '-f', 'runs/smoke/kd-mixup-i/seed0/parameters.json', '-p', 'out_dir', 'runs/local/kd-mixup-i',
                        '-p', 'train_teacher_if_missing', 'True'], cwd=clone, capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    # no committed file changed, and no file appeared in the study (the teacher's weights above all)
    assert status() == before and not any(line.startswith((' M', '??')) for line in before.splitlines()), status()
    assert json.loads((clone/'runs'/'local'/'kd-mixup-i'/'metrics.json').read_text())['finished']
    assert list((tmp_path/'cache'/'teachers').glob('*/model.pt'))

def test_the_cpu_scale_is_the_committed_studys(monkeypatch):
    """A change of a default or of the scale cannot silently change what the committed cpu study means. It ran where
    bf16 is native (its record); on such a CPU the scale chooses bf16, and the plan is that study."""
    import isokd.core
    native = dict(isokd.core.cpu_info(), flags=dict.fromkeys(isokd.core.CPU_FLAGS, True), capability='AVX512',
                  onednn_bf16=True)
    monkeypatch.setattr(isokd.core, 'cpu_info', lambda: native)
    jobs = {job.folder: job for job in plan('cpu', root=ROOT/'runs')}
    finished = sorted((ROOT/'runs'/'cpu').glob('*/seed*/metrics.json'))
    assert finished, 'no committed cpu study'
    for path in finished:
        recorded = json.loads(path.read_text())['identity']
        assert recorded == jobs[path.parent].run_config().identity(), f"{path.parent} is no longer the plan's run"
