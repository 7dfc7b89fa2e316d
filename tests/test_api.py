"`import isokd` in your own training loop: the loss API on torchvision and timm mixing targets, misuse, the README."
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

import isokd
from conftest import ROOT

C = 10

def batch(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, C, (n,), generator=g), torch.randn(n, C, generator=g)

def check_order_and_losses(target, teacher_logits):
    "KD-i's calibrated teacher keeps the order of every row's target, and every method gives finite losses."
    calibrated = isokd.isotonic_calibrate(teacher_logits, target)
    assert isokd.order_stats(calibrated, target)['violation_rate'] == 0
    student_logits = torch.randn_like(teacher_logits, requires_grad=True)
    for method, terms in (('kd', {'ce', 'kd'}), ('kd-i', {'ce', 'kd', 'iso'}), ('kd-p', {'ce', 'kd', 'penalty'})):
        out = isokd.KDLoss(method)(student_logits, teacher_logits, target)
        assert set(out.losses) == terms and torch.isfinite(out.loss)
        out.loss.backward()
    assert torch.isfinite(student_logits.grad).all()

@pytest.mark.parametrize('mix', [v2.MixUp(num_classes=C), v2.CutMix(num_classes=C)])
def test_torchvision_mixing_targets(mix):
    images, labels, teacher_logits = batch()
    torch.manual_seed(0)
    mixed, target = mix(images, labels)
    assert target.shape == (16, C) and torch.allclose(target.sum(1), torch.ones(16))
    check_order_and_losses(target, teacher_logits)

@pytest.mark.parametrize('switch_prob', [0.0, 1.0, 0.5])
def test_timm_mixup_with_label_smoothing(switch_prob):
    timm_mixup = pytest.importorskip('timm.data').Mixup
    mixup = timm_mixup(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=switch_prob, label_smoothing=0.1, num_classes=C)
    images, labels, teacher_logits = batch()
    # timm draws lam and the mixup/cutmix switch from NumPy's global generator
    np.random.seed(0)
    torch.manual_seed(0)
    mixed, target = mixup(images, labels)
    # label smoothing: every class keeps a little weight, and the two labels stay above the rest
    assert (target > 0).all() and torch.allclose(target.sum(1), torch.ones(16))
    check_order_and_losses(target, teacher_logits)
    weights, top2 = target.topk(3, 1)
    calibrated = isokd.isotonic_calibrate(teacher_logits, target)
    rest = calibrated.scatter(1, top2[:, :2], -torch.inf).amax(1)
    # rows with two distinct labels above the smoothed rest (lam = 1 or a class mixed with itself has one)
    two_labels = weights[:, 1] > weights[:, 2]
    assert (calibrated.gather(1, top2[:, :2]).amin(1) >= rest)[two_labels].all()

@pytest.mark.parametrize('switch_prob', [0.0, 1.0, 0.5])
def test_timm_label_smoothing_leaves_kd_p_and_kd_i_unchanged(switch_prob):
    "timm's Mixup with smoothing 0.1 and 0, same draws: the same penalty, the same IR(t) and KD terms (CE differs)."
    timm_mixup = pytest.importorskip('timm.data').Mixup
    images, labels, teacher_logits = batch()
    student_logits = torch.randn(16, C, generator=torch.Generator().manual_seed(1))
    out = {}
    for smoothing in (0.0, 0.1):
        np.random.seed(0)
        torch.manual_seed(0)
        _, target = timm_mixup(mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=switch_prob, label_smoothing=smoothing,
                               num_classes=C)(images, labels)
        out[smoothing] = (isokd.KDLoss('kd-p')(student_logits, teacher_logits, target).losses,
                          isokd.KDLoss('kd-i')(student_logits, teacher_logits, target))
    (p0, i0), (p1, i1) = out[0.0], out[0.1]
    assert p0['penalty'] > 0 and torch.equal(p1['penalty'], p0['penalty']) and torch.equal(p1['kd'], p0['kd'])
    assert torch.equal(i1.calibrated, i0.calibrated) and torch.equal(i1.losses['iso'], i0.losses['iso'])
    assert not torch.equal(p1['ce'], p0['ce'])                    # the cross-entropy sees the smoothed target


def test_bf16_mixup_targets_are_accepted():
    images, labels, teacher_logits = batch()
    torch.manual_seed(0)
    _, target = v2.MixUp(num_classes=C)(images, labels)
    for method in ('kd', 'kd-i', 'kd-p'):
        assert torch.isfinite(isokd.KDLoss(method)(torch.randn(16, C), teacher_logits, target.bfloat16()).loss)


def test_integer_labels_are_a_clean_batch():
    _, labels, teacher_logits = batch()
    student_logits = torch.randn(16, C)
    clean = isokd.KDLoss('kd')(student_logits, teacher_logits, labels)
    one_hot = isokd.KDLoss('kd')(student_logits, teacher_logits, F.one_hot(labels, C).float())
    torch.testing.assert_close(clean.loss, one_hot.loss)

@pytest.mark.parametrize('change, message', [
    (dict(student_logits=torch.randn(16, C + 1)), 'student_logits (16, 11) and teacher_logits (16, 10)'),
    (dict(teacher_logits=torch.randn(15, C)), 'student_logits (16, 10) and teacher_logits (15, 10)'),
    (dict(target=torch.full((16, C + 1), 1 / 11)), 'student_logits (16, 10) and target (16, 11)'),
    (dict(target=torch.randint(0, C, (16,))), "method='kd-i' needs the mixed target"),
    (dict(target=torch.full((16, C), 0.2)), 'rows must sum to 1'),
    (dict(target=torch.eye(C)[:16].repeat(2, 1)[:16] * 2 - torch.full((16, C), 0.1)), 'negative entries'),
    (dict(teacher_logits=torch.full((16, C), float('nan'))), 'teacher_logits has NaN or inf'),
])
def test_misuse_is_refused_with_a_clear_message(change, message):
    _, labels, teacher_logits = batch()
    inputs = dict(student_logits=torch.randn(16, C), teacher_logits=teacher_logits,
                  target=0.6 * F.one_hot(labels, C) + 0.4 * F.one_hot(labels.roll(1), C)) | change
    with pytest.raises(ValueError, match=re.escape(message)):
        isokd.KDLoss('kd-i')(**inputs)

def test_any_module_that_returns_logits_works():
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, C))
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, C))
    images, labels, _ = batch()
    torch.manual_seed(0)
    mixed, target = v2.MixUp(num_classes=C)(images, labels)
    with torch.no_grad():
        teacher_logits = teacher(mixed)
    isokd.KDLoss('kd-p')(student(mixed), teacher_logits, target).loss.backward()
    assert student[1].weight.grad.abs().sum() > 0

def test_import_isokd_reaches_its_modules():
    assert isokd.__doc__ and 'KDLoss' in isokd.__doc__
    assert callable(isokd.models.create_model) and callable(isokd.runs.distill)
    for name in isokd.SUBMODULES:
        if name != 'slurm' or (ROOT/'isokd'/'slurm.py').exists():
            getattr(isokd, name)
    with pytest.raises(AttributeError, match='no attribute'):
        isokd.nope

def test_the_readme_example_runs():
    "The README's 'in your own training loop' block, executed as it is written."
    readme = (ROOT/'README.md').read_text()
    block = re.search(r'<!-- example: own loop -->\s*```python\n(.*?)```', readme, re.S)
    assert block, "README.md lost its '<!-- example: own loop -->' python block"
    exec(compile(block.group(1), 'README.md', 'exec'), {})

def test_every_public_loss_documents_its_parameters():
    "help() on the losses a loop uses lists each parameter of their signatures (numpy style)."
    import inspect
    import isokd.functional as fn
    for obj in (isokd.KDLoss, fn.kd_terms, fn.kd_loss, fn.kd_i_loss, fn.kd_p_loss, fn.kd_id_loss, fn.kd_div,
                fn.nce_loss, isokd.isotonic_calibrate, isokd.isotonic_penalty, isokd.order_stats, isokd.CRDLoss):
        params = inspect.signature(obj).parameters
        assert 'Parameters\n    ----------' in obj.__doc__, obj.__qualname__
        for name in params:
            assert re.search(rf'\b{name}\b[^\n]* :', obj.__doc__), f"{obj.__qualname__} does not document {name}"

def test_the_wheel_ships_py_typed(tmp_path):
    "PEP 561: the built package carries py.typed, so type checkers read isokd's annotations."
    import subprocess
    import sys
    import zipfile
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w',
                        str(tmp_path), str(ROOT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel, = tmp_path.glob('isokd-*.whl')
    assert 'isokd/py.typed' in zipfile.ZipFile(wheel).namelist()
