"""The streaming path on a generated ImageNet-style JPEG folder: KD-i end to end on one process and on two (torchrun,
gloo), a resume after kill -9 to the same metrics, and bad folders refused before training, naming the path. The
teachers have random weights: the weights published by torchvision cannot be downloaded here."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from isokd.models import create_model
from isokd.runs import distill, read_metrics
from conftest import ROOT, BIN

CLASSES = ('ant', 'bee', 'cat')

def jpeg_folder(root: Path, classes=CLASSES, n_train=16, n_val=4, size=(48, 40)) -> Path:
    "`root` with train/<class>/*.JPEG and val/<class>/*.JPEG of random pixels, one brightness per class."
    g = torch.Generator().manual_seed(0)
    for split, n in (('train', n_train), ('val', n_val)):
        for c, name in enumerate(classes):
            (root/split/name).mkdir(parents=True, exist_ok=True)
            for k in range(n):
                pixels = (torch.rand(size[1], size[0], 3, generator=g) * 80 + 80 * c).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(root/split/name/f'{k}.JPEG', quality=90)
    return root

@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    "A data root holding imagenet/ (3 classes, 48 training and 12 validation JPEGs of 48 x 40)."
    root = tmp_path_factory.mktemp('data')
    jpeg_folder(root/'imagenet')
    return root

def launch(*args, nproc=1, env=None):
    "A run through isokd.launch: one process, or `nproc` under torchrun; the CompletedProcess."
    head = [str(BIN/'torchrun'), '--standalone', '--nproc_per_node', str(nproc)] if nproc > 1 else [sys.executable]
    return subprocess.run([*head, '-m', 'isokd.launch', *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, **(env or {})))

def params(data_root, out_dir, **more) -> list:
    "The `-p` arguments of a KD-i (CutMix) run on the generated folder at 32 x 32, with one loader process."
    values = dict(dataset='imagenet', data_root=data_root, image_size=32, n_train=None, batch_size=16, epochs=3,
                  mixup='cutmix', calibration='isotonic', device='cpu', bf16=False, workers=1, out_dir=out_dir) | more
    return [a for k, v in values.items() for a in ('-p', k, v)]

def _strip(m):
    "The metrics a rerun must reproduce exactly: everything but wall-clock times."
    return [{k: v for k, v in r.items() if k not in ('seconds', 'images_per_s')} for r in m['history']]

def test_kd_i_streams_end_to_end_and_resumes_after_kill_9(data_root, tmp_path):
    # small CIFAR-zoo models keep it quick: the streaming path is what is tested here
    torch.manual_seed(0)
    torch.save(create_model('resnet14', 3).state_dict(), tmp_path/'teacher.pt')
    run = params(data_root, tmp_path/'whole', arch='resnet8', teacher_arch='resnet14',
                 teacher_path=tmp_path/'teacher.pt')
    r = launch('kd', *run)
    assert r.returncode == 0, r.stderr[-3000:]
    whole = read_metrics(tmp_path/'whole')
    assert whole['finished'] and whole['method'] == 'KD-i' and len(whole['history']) == 3
    assert whole['params']['image_size'] == 32 and 'before' in whole['history'][-1]['teacher_order']
    killed = [a if a != tmp_path/'whole' else tmp_path/'killed' for a in run]
    p = subprocess.Popen([sys.executable, '-m', 'isokd.launch', 'kd', *map(str, killed)], cwd=ROOT,
                         start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    # metrics.json is written right after the first checkpoint
    record, deadline = tmp_path/'killed'/'metrics.json', time.time() + 300
    while not record.exists() and time.time() < deadline and p.poll() is None:
        time.sleep(0.05)
    assert p.poll() is None, "the run ended before it could be killed"
    # the run and its loader processes, as kill -9 of the job
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    m = read_metrics(tmp_path/'killed')
    assert m is not None and not m['finished'] and 1 <= len(m['history']) < 3
    r = launch('kd', *killed)
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'Resuming' in r.stdout + r.stderr
    resumed = read_metrics(tmp_path/'killed')
    assert resumed['finished'] and _strip(resumed) == _strip(whole)

def test_the_paper_pair_trains_on_two_processes_from_weights_named_as_torchvision_publishes_them(data_root, tmp_path):
    # random weights stand in for torchvision's published ResNet-34 in the hub cache, where a download puts it
    torch.manual_seed(0)
    checkpoints = tmp_path/'torch'/'hub'/'checkpoints'
    checkpoints.mkdir(parents=True)
    torch.save(create_model('resnet34_imagenet', 3).state_dict(), checkpoints/'resnet34-b627a593.pth')
    r = launch('kd', *params(data_root, tmp_path/'ddp', arch='resnet18_imagenet', teacher_arch='resnet34_imagenet',
                             teacher_path='torchvision:ResNet34_Weights.IMAGENET1K_V1', epochs=2),
               nproc=2, env=dict(TORCH_HOME=str(tmp_path/'torch')))
    assert r.returncode == 0, r.stderr[-3000:]
    m = read_metrics(tmp_path/'ddp')
    assert m['finished'] and m['method'] == 'KD-i' and m['versions']['world_size'] == 2 and len(m['history']) == 2
    assert m['teacher']['path'] == str(checkpoints/'resnet34-b627a593.pth')
    assert m['teacher']['test_acc'] == pytest.approx(0.73314)
    # every one of the 12 validation images is evaluated
    assert sum(m['history'][-1]['test_bins'][0]) == 12

def _missing(root):
    pass

def _no_classes(root):
    for c in CLASSES:
        for f in (root/'imagenet'/'train'/c).iterdir():
            f.unlink()
        (root/'imagenet'/'train'/c).rmdir()

def _unreadable(root):
    (root/'imagenet'/'train'/'bee'/'broken.JPEG').write_bytes(b'not a jpeg')

def _other_classes(root):
    (root/'imagenet'/'val'/'dog').mkdir()
    Image.new('RGB', (8, 8)).save(root/'imagenet'/'val'/'dog'/'0.JPEG')

@pytest.mark.parametrize('damage, path, message', [
    (_missing, 'imagenet/train', 'is not a folder'),
    (_no_classes, 'imagenet/train', 'has no class folders'),
    (_unreadable, 'imagenet/train/bee/broken.JPEG', 'UnidentifiedImageError'),
    (_other_classes, 'imagenet/val', "only in val: ['dog']"),
], ids=['missing', 'no classes', 'unreadable file', 'other classes'])
def test_a_bad_folder_is_refused_before_training_naming_the_path(tmp_path, damage, path, message):
    root = tmp_path/'data'
    if damage is not _missing:
        jpeg_folder(root/'imagenet', n_train=2, n_val=1)
    damage(root)
    out = tmp_path/'run'
    with pytest.raises((ValueError, FileNotFoundError)) as e:
        distill(dataset='imagenet', data_root=str(root), image_size=32, arch='resnet8', teacher_arch='resnet8',
                n_train=None, device='cpu', out_dir=str(out), progress=False)
    assert str(root/path) in str(e.value) and message in str(e.value)
    assert not out.exists()
