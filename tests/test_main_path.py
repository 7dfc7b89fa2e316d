"""The README's main path, end to end at a tiny size: `make run` distils from the committed study's teacher, in another
folder than the study, writes the study's report and ends with the comparison against the committed study.

`make run` is `python -m isokd.study --scale cpu --seeds 1 --configs readme --root runs/local --compare-with runs/cpu
--teacher runs/cpu/teacher/seed0`. The command line has no flag that shrinks the cpu scale's students (2,500 images,
60 epochs: minutes a run), and the smoke scale trains a teacher per seed, so it refuses `--teacher`. The test therefore
runs the module as `python -m` does (`runpy`) after shrinking the cpu scale's students in `SCALES['cpu']` (300 images,
2 epochs, smaller validation and test sets, fp32), and keeps the rest of the path: the cpu scale's teacher (a copy of
the committed one, in a folder of its own), the papermill run notebooks, the report notebook executed by papermill at
the end, and the comparison with the committed study `runs/cpu`. A report that fails makes the exit status 1."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

COMMITTED = ROOT/'runs'/'cpu'
# what shrinks the cpu scale's students; the rest of the scale (the teacher above all) is the committed study's. fp32:
# bf16 is emulated on a CPU without AVX512-BF16 or AMX, and ten times slower there
TINY = dict(n_train=300, epochs=2, n_test=1000, n_val=500, bf16=False)
# `python -m isokd.study` with the cpu scale's students shrunk first
MAIN = f"""
import runpy, sys
from dataclasses import replace
from isokd.design import SCALES
SCALES['cpu'] = replace(SCALES['cpu'], student=SCALES['cpu'].student | {TINY!r})
sys.argv = ['isokd.study', *sys.argv[1:]]
runpy.run_module('isokd.study', run_name='__main__', alter_sys=True)
"""

@pytest.fixture
def teacher(tmp_path):
    "The committed study's teacher, copied into a folder of its own (a finished run with its weights)."
    if not (COMMITTED/'teacher'/'seed0'/'model.pt').is_file():
        pytest.skip('the committed cpu study has no teacher weights here')
    folder = tmp_path/'elsewhere'/'teacher'
    shutil.copytree(COMMITTED/'teacher'/'seed0', folder)
    return folder

def test_make_run_at_a_tiny_size_reports_the_teacher_and_ends_with_the_comparison(teacher, tmp_path):
    root = tmp_path/'runs'
    r = subprocess.run([sys.executable, '-c', MAIN, '--scale', 'cpu', '--seeds', '1', '--configs',
                        'kd-mixup,kd-mixup-i', '--root', str(root), '--compare-with', 'runs/cpu',
                        '--teacher', str(teacher), '--workers', '2'],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    out, study = r.stdout, root/'cpu'
    assert r.returncode == 0, out + r.stderr
    assert '2 runs of the cpu scale' in out and f"report: {study/'report.ipynb'}" in out, out

    # the students distilled from the teacher elsewhere: the study has no teacher of its own
    recorded = json.loads((teacher/'metrics.json').read_text())
    for config in ('kd-mixup', 'kd-mixup-i'):
        m = json.loads((study/config/'seed0'/'metrics.json').read_text())
        assert m['finished'] and m['teacher']['model_sha256'] == recorded['model_sha256']
    assert not (study/'teacher').exists()

    # the report: its figures, and on the study's page the teacher and its order statistics, as it recorded them
    for f in ('report.ipynb', 'README.md', 'results.csv', 'teacher_order.png', 'teacher_ir.csv', 'curves.png'):
        assert (study/f).is_file(), f
    page = (study/'README.md').read_text()
    assert f"The students distilled from `{teacher}` (resnet14, seed 0" in page, page
    teacher_section = page[page.index('## The teacher'):]
    for samples, stages in recorded['order_profile'].items():
        for stage, s in stages.items():
            row = next(line for line in teacher_section.splitlines() if f"('{samples}', '{stage}')" in line)
            assert f"{s['violation_rate']:.3f}".rstrip('0').rstrip('.') in row, (row, s)
    # one seed: the summary, above the design, says that nothing is concluded
    assert (page.index('## Summary') < page.index('Each configuration of the 1 primary comparisons has one seed')
            < page.index('## Design')), page

    # the comparison with the committed study comes after the report and is the last thing printed
    start = out.index(f"seed 0 against the committed study {COMMITTED}:")
    assert out.index('report: ') < start
    comparison = out[start:]
    assert 'here: 2 runs on ' in comparison and 'committed: 170 runs on AMD EPYC in bf16' in comparison, comparison
    assert 'of 2 configurations inside their 95% prediction interval' in comparison, comparison
    assert 'of 1 comparisons inside their 95% prediction interval' in comparison, comparison
    assert "one seed detects only a shift larger than the interval's half-width" in comparison, comparison
    assert comparison.rstrip().endswith("the students here distilled from the committed teacher's weights (sha256 "
                                        f"{recorded['model_sha256'][:12]}, trained on AMD EPYC in bf16)"), comparison
