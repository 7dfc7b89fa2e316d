"""What a GPU run does, checked where it can be: bf16 autocast and torch.compile run on the CPU too;
on CUDA, the step never waits for the host."""
import pytest
import torch

from isokd.data import ImageData, synthetic_data, DeviceLoader
from isokd.mixing import Mixer
from isokd.models import create_model
from isokd.config import KDConfig
from isokd.loop import make_optimizer, train_epoch, train_step
from isokd.runs import distill, train_teacher
import warnings

from conftest import kd_of, crd_of

def test_bf16_and_compile_run_on_cpu(tmp_path, tiny):
    train_teacher(dataset='synthetic', arch='resnet8', epochs=1, batch_size=64, device='cpu',
                  out_dir=str(tmp_path/'t'), progress=False)
    m = distill(**(tiny | dict(epochs=1, calibration='isotonic', bf16=True, compile=True)),
                teacher_path=str(tmp_path/'t'), out_dir=str(tmp_path/'s'), progress=False)
    assert m['finished'] and m['params']['compile'] and m['params']['bf16']
    assert m['test_acc_last'] > 0.2                           # 10 classes: chance is 0.1
    assert 'compile' not in m['identity']                     # how it runs, not what it computes

@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
@pytest.mark.parametrize('calibration, mixup', [('isotonic', 'mixup'), ('isotonic_appr', 'cutmix'), ('none', 'mixup')])
def test_cuda_step_never_syncs_with_the_host(calibration, mixup):
    dev = torch.device('cuda')
    d = _synthetic(512)
    distiller = kd_of(create_model('resnet8', 10), create_model('resnet20', 10), calibration=calibration).to(dev)
    distiller.to(memory_format=torch.channels_last).train()
    loader = DeviceLoader(d.x_train, d.y_train, 128, d.mean, d.std, train=True, device=dev, channels_last=True)
    opt, sched = make_optimizer(distiller.student.parameters(), KDConfig(dataset='synthetic'), len(loader))
    mixer, sums = Mixer(mixup, 10), torch.zeros((), device=dev)
    for i, (x, y, idx) in enumerate(loader):                  # the first step allocates; the next ones are checked
        if i == 1:
            torch.cuda.set_sync_debug_mode('error')
        try:
            sums += train_step(distiller, (x, y, idx), mixer, opt, sched, bf16=True).loss.float()
        finally:
            torch.cuda.set_sync_debug_mode('default')
    assert torch.isfinite(sums).item()


def _synthetic(n_train: int) -> ImageData:
    return ImageData('synthetic', *synthetic_data(n_train, 64), 10, (0.5,) * 3, (0.25,) * 3)

def _syncs_in_an_epoch(distiller, d, mixer, steps: int) -> int:
    "The host syncs torch reports during a `train_epoch` of `steps` steps (loader, mixing, step, records)."
    dev = torch.device('cuda')
    loader = DeviceLoader(d.x_train[:128 * steps], d.y_train[:128 * steps], 128, d.mean, d.std, train=True,
                          device=dev, channels_last=True)
    opt, sched = make_optimizer(distiller.student.parameters(), KDConfig(dataset='synthetic'), len(loader))
    # a first epoch allocates and warms every kernel up
    train_epoch(distiller, loader, mixer, opt, sched, 0, 0, bf16=True, progress=False)
    torch.cuda.set_sync_debug_mode('warn')
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            train_epoch(distiller, loader, mixer, opt, sched, 1, 0, bf16=True, progress=False)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    return sum('synchroniz' in str(w.message) for w in caught)

@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
@pytest.mark.parametrize('kind, calibration, mixup', [('kd', 'isotonic', 'mixup'), ('crd', 'isotonic_appr', 'cutmix')])
def test_cuda_epoch_syncs_only_at_its_end(kind, calibration, mixup):
    "A whole epoch, loader included: the syncs are the end-of-epoch reads, as many for 8 steps as for 2."
    d = _synthetic(1024)
    counts = []
    for steps in (2, 8):
        torch.manual_seed(0)
        student, teacher = create_model('resnet8', 10), create_model('resnet20', 10)
        if kind == 'kd':
            distiller = kd_of(student, teacher, calibration=calibration)
        else:
            distiller = crd_of(student, teacher, d.y_train[:128 * steps], calibration=calibration, nce_n=64)
        distiller = distiller.to('cuda').to(memory_format=torch.channels_last)
        counts.append(_syncs_in_an_epoch(distiller, d, Mixer(mixup, 10), steps))
    assert counts[0] == counts[1], f"host syncs: {counts[0]} in 2 steps, {counts[1]} in 8: some step syncs"
