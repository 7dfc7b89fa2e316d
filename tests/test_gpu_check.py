"benchmarks/gpu_check.py in its small form: every step runs and the report has every figure and the device's name."
import json
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

def test_gpu_check_small_writes_every_figure(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'gpu_check.py'), str(tmp_path), '--small'],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path/'gpu_check.json').read_text())
    assert report['small'] and report['device']['device_name']
    assert report['cuda_tests']['tests'] >= 5 and report['cuda_tests']['failures'] == 0
    step = report['train_step']['compile_False']
    assert step['kd_aug_ms'] > 0 and step['kd_i_ratio'] > 0 and step['kd_p_ratio'] > 0
    assert set(report['calibration']) == {'128x100', '256x1000'}
    assert all(c['calibrate_ms'] > 0 and c['sort_ms'] > 0 for c in report['calibration'].values())
    assert len(report['two_epochs']['seconds_per_epoch']) == 2
    assert 'calibration 256x1000' in done.stdout and 'two KD-i epochs' in done.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason='the refusal is for a machine without a GPU')
def test_gpu_check_without_gpu_says_so_at_once(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT/'benchmarks'/'gpu_check.py'), str(tmp_path/'out')],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and 'no CUDA GPU here' in done.stderr
    assert not (tmp_path/'out').exists()
