"""The precision a run chooses: bf16 autocast where the device computes it natively, float32 elsewhere, a request
followed (with a warning where bf16 is emulated); what a run records of it and of the CPU."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

import isokd.core as core
import isokd.runs as runs
from isokd.config import KDConfig, TeacherConfig, as_teacher
from isokd.core import CPU_FLAGS, choose_precision, cpu_bf16_native, cpu_info
from isokd.runs import distill, read_metrics
from conftest import ROOT, papermill

EMULATING = dict(model='an AVX2-only CPU', flags=dict.fromkeys(CPU_FLAGS, False) | dict(avx2=True),
                 capability='AVX2', onednn_bf16=False)
NATIVE = dict(model='an AMX CPU', flags=dict.fromkeys(CPU_FLAGS, True), capability='AVX512', onednn_bf16=True)

@pytest.mark.parametrize('cpu, requested, bf16, said', [
    (EMULATING, None, False, 'float32, since bf16 would be emulated here'),
    (NATIVE, None, True, 'bf16 autocast, native here'),
    (EMULATING, True, True, 'emulated here and about 8-11x slower than float32'),
    (NATIVE, False, False, 'float32 as requested'),
    (EMULATING, False, False, 'float32 as requested'),
    (NATIVE, True, True, 'bf16 autocast as requested')])
def test_cpu_precision_follows_the_hardware_or_the_request(cpu, requested, bf16, said):
    precision = choose_precision(requested, 'cpu', cpu)
    assert (precision.bf16, precision.native) == (bf16, cpu is NATIVE)
    assert said in precision.reason and cpu['model'] in precision.reason

def test_torch_capped_at_avx2_is_not_native():
    "A CPU with bf16 instructions that torch is told not to use (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA) emulates."
    assert not cpu_bf16_native(NATIVE | dict(capability='AVX2'))
    assert not cpu_bf16_native(NATIVE | dict(onednn_bf16=False))
    env = dict(os.environ, ATEN_CPU_CAPABILITY='avx2', ONEDNN_MAX_CPU_ISA='AVX2')
    code = ('from isokd.core import cpu_bf16_native, choose_precision; '
            'print(cpu_bf16_native(), choose_precision(None, "cpu").bf16)')
    done = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ['False', 'False'], done.stderr

@pytest.mark.parametrize('supported', [True, False])
def test_cuda_precision_follows_the_device(monkeypatch, supported):
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *a, **k: supported)
    monkeypatch.setattr(torch.cuda, 'get_device_name', lambda *a, **k: 'a GPU')
    precision = choose_precision(None, 'cuda')
    assert precision.bf16 is supported and 'a GPU' in precision.reason

def test_the_identity_holds_the_chosen_precision(monkeypatch):
    "A run's identity says the precision it ran in; a teacher serves students whatever precision it trained in."
    monkeypatch.setattr(core, 'cpu_info', lambda: EMULATING)
    emulated = KDConfig(device='cpu').identity()
    monkeypatch.setattr(core, 'cpu_info', lambda: NATIVE)
    native = KDConfig(device='cpu').identity()
    assert (emulated['bf16'], native['bf16']) == (False, True)
    assert as_teacher(TeacherConfig(device='cpu', bf16=True).identity()) == as_teacher(
        TeacherConfig(device='cpu', bf16=False).identity())

def test_cpu_info_names_the_flags_and_torchs_view():
    info = cpu_info()
    assert set(info['flags']) == set(CPU_FLAGS) and info['capability'] == torch.backends.cpu.get_cpu_capability()
    for key in ('model', 'family', 'model_number', 'stepping', 'onednn_bf16'):
        assert key in info

def test_a_run_records_its_precision_and_cpu(tmp_path, monkeypatch, capsys):
    "A 2-epoch run on a CPU that emulates bf16 (faked) runs in float32, says so at its start, and records it."
    monkeypatch.setattr(core, 'cpu_info', lambda: EMULATING | dict(family='25', model_number='1', stepping='1'))
    m = distill(dataset='synthetic', arch='resnet8', teacher_arch='resnet8', epochs=2, teacher_epochs=1, n_train=None,
                calibration='isotonic', out_dir=str(tmp_path/'kd'), progress=False, device='cpu')
    assert m['precision'] == dict(autocast='fp32', native_bf16=False, requested=None,
                                  reason=choose_precision(None, 'cpu', EMULATING).reason)
    assert m['identity']['bf16'] is False
    assert m['versions']['cpu_info']['flags']['avx512_bf16'] is False
    assert m['versions']['cpu_info']['capability'] == 'AVX2'
    assert 'float32, since bf16 would be emulated here' in capsys.readouterr().out
    assert read_metrics(tmp_path/'kd')['precision']['autocast'] == 'fp32'

def test_papermill_says_precision_and_resume_on_the_terminal(tmp_path, monkeypatch):
    "The user's own command: the start line and a resume reach papermill's stderr (the terminal)."
    out = tmp_path/'kd'
    params = dict(dataset='synthetic', arch='resnet8', teacher_arch='resnet8', epochs=2, teacher_epochs=1,
                  n_train=None, out_dir=str(out), device='cpu')
    # a run that stops after its first epoch leaves a checkpoint to resume from
    train_epoch = runs.train_epoch
    def first_epoch_only(model, loader, mixer, opt, sched, epoch, *args, **kwargs):
        if epoch == 1:
            raise KeyboardInterrupt
        return train_epoch(model, loader, mixer, opt, sched, epoch, *args, **kwargs)
    monkeypatch.setattr(runs, 'train_epoch', first_epoch_only)
    with pytest.raises(KeyboardInterrupt):
        distill(progress=False, **params)
    # ipykernel leaves the descriptors alone under pytest: the kernel must not know it was started from a test
    monkeypatch.delenv('PYTEST_CURRENT_TEST')
    done = papermill('run_kd.ipynb', tmp_path/'out.ipynb', **(params | dict(n_train='None')))
    assert done.returncode == 0, done.stderr[-2000:]
    assert 'KD-aug (resnet8) on cpu' in done.stderr and 'thread(s)' in done.stderr
    assert choose_precision(None, 'cpu').reason in done.stderr
    assert f'Resuming {out} after epoch 1 of 2' in done.stderr


def test_amended_precision_of_a_committed_run_from_its_notebook(tmp_path, monkeypatch):
    "tools/amend_provenance.py: bf16 from the parameters, native from the printed throughput; twice changes nothing."
    monkeypatch.syspath_prepend(str(ROOT/'tools'))
    from amend_provenance import main
    run = tmp_path/'kd'/'seed0'
    shutil.copytree(ROOT/'runs'/'cpu'/'kd'/'seed0', run, ignore=shutil.ignore_patterns('*.pt'))
    record = json.loads((run/'metrics.json').read_text())
    record.pop('precision', None)
    (run/'metrics.json').write_text(json.dumps(record))
    notebook = json.loads((run/'run.ipynb').read_text())
    slow = tmp_path/'slow'/'seed0'
    shutil.copytree(run, slow)
    # the same run as if its epochs had printed an emulated bf16's throughput
    text = json.dumps(notebook)
    (slow/'run.ipynb').write_text(re.sub(r'(\d+) img/s', '48 img/s', text))
    assert main([str(tmp_path)]) == 0
    fast_p, slow_p = (json.loads((d/'metrics.json').read_text())['precision'] for d in (run, slow))
    assert (fast_p['autocast'], fast_p['native_bf16'], fast_p['amended']) == ('bf16', True, True)
    assert (slow_p['autocast'], slow_p['native_bf16']) == ('bf16', False) and '48 img/s' in slow_p['reason']
    before = (run/'metrics.json').read_bytes()
    main([str(tmp_path)])
    assert (run/'metrics.json').read_bytes() == before
