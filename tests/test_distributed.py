"""DDP through torchrun on CPU (gloo, 2 processes): the same gradients as one process,
the same training within a tolerance, one writer."""
import fcntl
import json
import os
import subprocess
import sys

import pytest
import torch

from isokd.mixing import Mixer
from isokd.models import create_model
from conftest import ROOT, BIN, kd_of, crd_of

ENV = dict(os.environ, OMP_NUM_THREADS='1',
           PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT/'tests'), os.environ.get('PYTHONPATH', '')]))
TINY = ['-p', 'dataset', 'synthetic', '-p', 'arch', 'resnet8', '-p', 'epochs', '3', '-p', 'batch_size', '64',
        '-p', 'schedule', 'step', '-p', 'bf16', 'False',
        '-p', 'device', 'cpu']

def torchrun(*args, nproc=2):
    return subprocess.run([str(BIN/'torchrun'), '--standalone', '--nproc_per_node', str(nproc), *map(str, args)],
                          cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)

def launch(*args): return torchrun('-m', 'isokd.launch', *args)

def kd_i_step_inputs():
    "A KD-i distiller (BatchNorm in eval mode, so that each sample's loss is its own) and a mixed global batch of 64."
    torch.manual_seed(0)
    distiller = kd_of(create_model('resnet8', 10), create_model('resnet8', 10), calibration='isotonic').eval()
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    return (distiller, *Mixer('mixup', 10)(x, y))

def crd_step_inputs():
    """A CRD-i distiller (BatchNorm in eval mode) over 200 training images,
    and a mixed global batch of 64 with its dataset indices."""
    torch.manual_seed(0)
    labels = torch.arange(200) % 10
    distiller = crd_of(create_model('resnet8', 10), create_model('resnet8', 10), labels,
                       calibration='isotonic', nce_n=64).eval()
    x, index = torch.randn(64, 3, 32, 32), torch.randperm(200)[:64]
    return (distiller, *Mixer('mixup', 10)(x, labels[index]), index)

def test_ddp_crd_keeps_one_memory_bank_on_every_rank(tmp_path):
    r = torchrun(ROOT/'tests'/'ddp_crd_memory.py', tmp_path/'mem')
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [torch.load(f"{tmp_path/'mem'}.{k}") for k in (0, 1)]
    distiller, x, target, index = crd_step_inputs()
    before = distiller.crd.memory.memory_s.clone()
    distiller(x, target, index)           # one process, the whole batch
    one = distiller.crd.memory
    # every row of the global batch written, as one process writes it
    for m in ranks:
        torch.testing.assert_close(m['memory_s'], one.memory_s, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(m['memory_t'], one.memory_t, rtol=1e-4, atol=1e-6)
    assert not torch.equal(before[index], one.memory_s[index])
    torch.testing.assert_close(ranks[0]['Z'], ranks[1]['Z'])
    assert (ranks[0]['Z'] > 0).all()   # one Z, set on every rank

def test_ddp_step_gives_the_single_process_gradients(tmp_path):
    r = torchrun(ROOT/'tests'/'ddp_grads.py', tmp_path/'grads.pt')
    assert r.returncode == 0, r.stderr[-3000:]
    ddp = torch.load(tmp_path/'grads.pt')
    distiller, x, target = kd_i_step_inputs()
    sum(distiller(x, target).losses.values()).backward()
    for k, p in distiller.student.named_parameters():
        torch.testing.assert_close(ddp[k], p.grad, rtol=1e-4, atol=1e-6, msg=k)

def test_two_processes_train_like_one_with_the_same_global_batch(tmp_path):
    # Tolerance: the shards draw their own crops, flips and mixing and normalise their own 32 images (no SyncBatchNorm
    # on CPU), so the runs are two samples of the same training, not one: first-epoch loss within 3%, top-1 within
    # 8 points.
    two = launch('teacher', *TINY, '-p', 'out_dir', tmp_path/'two')
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, '-m', 'isokd.launch', 'teacher', *TINY, '-p', 'out_dir', tmp_path/'one'],
                         cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    m2, m1 = (json.loads((tmp_path/d/'metrics.json').read_text()) for d in ('two', 'one'))
    assert m2['versions']['world_size'] == 2 and m1['versions']['world_size'] == 1
    assert m2['identity'] == m1['identity'] and m2['finished']
    assert abs(m2['history'][0]['train_loss'] / m1['history'][0]['train_loss'] - 1) < 0.03
    assert abs(m2['test_acc_last'] - m1['test_acc_last']) < 0.08 and m2['test_acc_last'] > 0.4
    assert two.stdout.count('epoch 3/3') == 1                       # rank 0 alone prints
    assert sorted(p.name for p in (tmp_path/'two').iterdir()) == ['.lock', 'metrics.json', 'model.pt']

def test_ddp_kd_i_and_crd_p_distil_from_a_teacher(tmp_path):
    launch('teacher', *TINY, '-p', 'out_dir', tmp_path/'t')
    for kind, cal, method, extra in (('kd', 'isotonic', 'KD-i', []),
                                     ('crd', 'isotonic_appr', 'CRD-p', ['-p', 'nce_n', '256'])):
        r = launch(kind, *TINY, *extra, '-p', 'calibration', cal, '-p', 'teacher_arch', 'resnet8',
                   '-p', 'teacher_path', tmp_path/'t', '-p', 'out_dir', tmp_path/kind)
        assert r.returncode == 0, r.stderr[-3000:]
        m = json.loads((tmp_path/kind/'metrics.json').read_text())
        assert m['method'] == method and m['finished'] and m['test_acc_last'] > 0.3
        assert m['history'][-1]['teacher_order']['after']['violation_rate'] == 0

@pytest.mark.parametrize('args, message', [
    (['kd', *TINY, '-p', 'batch_size', '63'],
     'batch_size=63 (the global batch) does not split evenly over 2 processes'),
    (['kd', '-p', 'temprature', '4'], "unknown parameter 'temprature'"),
    (['crd', *TINY, '-p', 'nce_n', '100000'], 'nce_n=100000 is more negatives'),
])
def test_bad_launch_fails_before_training(tmp_path, args, message):
    r = launch(*args, '-p', 'out_dir', tmp_path/'x')
    assert r.returncode != 0 and message in r.stderr, r.stderr[-3000:]
    assert not (tmp_path/'x').exists()

def test_a_failure_on_rank_0_alone_ends_every_rank(tmp_path):
    # rank 0 alone takes the run's lock; the others go on to a barrier. torchrun stops them when rank 0 fails (with
    # gloo they also see the closed connection), instead of their waiting for the 30-minute timeout (or this test's).
    out = tmp_path/'busy'
    out.mkdir()
    with open(out/'.lock', 'w') as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        r = launch('teacher', *TINY, '-p', 'out_dir', out)
    assert r.returncode != 0 and 'is in use by another running process' in r.stderr, r.stderr[-3000:]
    assert not (out/'metrics.json').exists()
