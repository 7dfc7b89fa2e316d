"The distillation objectives (KD, KD-aug, KD-i, KD-p) as the runs build them (`kd_div` by hand: 05_kd)."
import torch
import torch.nn as nn
import torch.nn.functional as F

from isokd.kd import kd_div
from conftest import kd_of
from isokd.calibration import isotonic_calibrate
from isokd.models import create_model

def test_mixed_ce_is_the_lam_weighted_sum():
    z = torch.randn(5, 7)
    target = torch.zeros(5, 7)
    target[:, 2], target[:, 4] = 0.3, 0.7
    assert torch.isclose(F.cross_entropy(z, target),
                         0.3 * F.cross_entropy(z, torch.full((5,), 2)) + 0.7 * F.cross_entropy(z, torch.full((5,), 4)))

def _pair(seed=0):
    torch.manual_seed(seed)
    return create_model('resnet8', 10), create_model('resnet8', 10)

def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 3, 32, 32, generator=g)
    target = torch.zeros(6, 10)
    target[torch.arange(6), torch.arange(6)] = 0.6
    target[torch.arange(6), (torch.arange(6) + 1) % 10] += 0.4
    return x, target

def test_kd_losses_by_method():
    s, t = _pair()
    x, target = _batch()
    for cal, mode, keys in [('none', 'add', {'ce', 'kd'}), ('isotonic', 'add', {'ce', 'kd', 'iso'}),
                            ('isotonic', 'replace', {'ce', 'kd'}), ('isotonic_appr', 'add', {'ce', 'kd', 'penalty'})]:
        out = kd_of(s, t, calibration=cal, isotonic_mode=mode)(x, target)
        assert set(out.losses) == keys
    # KD-i 'add' = KD-aug + rho * KL_T(IR(t), z), by hand from the teacher's logits
    kd = kd_of(s, t, temperature=4.5, alpha=0.95, calibration='isotonic', rho=2.0)
    out = kd(x, target)
    t_iso = isotonic_calibrate(out.teacher_logits, target)
    assert torch.isclose(out.losses['iso'], 2.0 * kd_div(out.logits, t_iso, 4.5))
    assert torch.isclose(out.losses['kd'], 0.95 * kd_div(out.logits, out.teacher_logits, 4.5))
    assert torch.isclose(out.losses['ce'], 0.05 * F.cross_entropy(out.logits, target))

def test_student_fits_the_calibrated_teacher():
    "No double softmax: student logits equal to the calibrated teacher's make the KD-i term zero."
    t = torch.randn(4, 10)
    target = _batch()[1][:4]
    t_iso = isotonic_calibrate(t, target)
    assert kd_div(t_iso, t_iso, 4.5).abs() < 1e-6

def test_every_term_trains_only_the_student_with_one_forward():
    s, t = _pair()
    x, target = _batch()
    first_conv = next(m for m in s.modules() if isinstance(m, nn.Conv2d))
    calls = []
    s.register_forward_hook(lambda *a: calls.append(1))
    for cal in ('none', 'isotonic', 'isotonic_appr'):
        kd = kd_of(s, t, calibration=cal).train()
        assert not kd.teacher.training
        calls.clear()
        out = kd(x, target)
        assert len(calls) == 1
        for name, loss in out.losses.items():
            g = torch.autograd.grad(loss, first_conv.weight, retain_graph=True)[0]
            assert g.abs().sum() > 0, (cal, name)
    assert all(p.grad is None and not p.requires_grad for p in t.parameters())

def test_teacher_runs_on_the_mixed_batch_in_eval_mode():
    s, t = _pair()
    x, target = _batch()
    t.train()
    kd = kd_of(s, t).train()
    out = kd(x, target)
    t.eval()
    with torch.no_grad():
        assert torch.allclose(out.teacher_logits, t(x), atol=1e-5)
