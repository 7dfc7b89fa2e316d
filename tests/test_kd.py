"The distillation objectives (KD, KD-aug, KD-i, KD-p) as the runs build them (`kd_div` by hand: 05_kd)."
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from isokd.functional import kd_div
from isokd.kd import KDLoss
from isokd.crd import CRDLoss
from isokd.functional import nce_loss
from isokd.mixing import Mixer
from conftest import kd_of
from isokd.calibration import _calibrate, isotonic_calibrate, isotonic_penalty
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
    out, teacher_logits = kd(x, target), kd.teacher_logits(x)
    t_iso = isotonic_calibrate(teacher_logits, target)
    assert torch.isclose(out.losses['iso'], 2.0 * kd_div(out.logits, t_iso, 4.5))
    assert torch.isclose(out.losses['kd'], 0.95 * kd_div(out.logits, teacher_logits, 4.5))
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
    teacher_logits = kd.teacher_logits(x)
    t.eval()
    with torch.no_grad():
        assert torch.allclose(teacher_logits, t(x), atol=1e-5)


# ---- the study's numbers, to the bit (issue 33) --------------------------------------------------------------------
# Frozen copies of KDLoss's terms as the committed study computed them (before issue 33): the checks, the float32 CE,
# the -inf-safe KL, the tiers of KD-p's labels and the masked-class handling of IR must not change a bit for the
# inputs the study feeds (two-way Mixup / CutMix float32 targets with exact zeros, fp32 or bf16 autocast).


def frozen_kd_div(z, t, T):
    return F.kl_div(F.log_softmax(z.float() / T, 1), F.log_softmax(t.float() / T, 1), reduction='batchmean',
                    log_target=True) * T * T


def frozen_penalty(z, target):
    p = z.to(torch.float64 if z.dtype == torch.float64 else torch.float32).softmax(1)
    S, top = target > 0, target == target.amax(1, keepdim=True)
    first = torch.relu(torch.where(S, -1.0, p).amax(1) - torch.where(S, p, 2.0).amin(1))
    second = torch.relu(torch.where(S & ~top, p, -1.0).amax(1) - torch.where(S & top, p, 2.0).amin(1))
    return first.mean() + second.mean()


def frozen_kd_loss(method, mode, z, t, target, T=4.5, alpha=0.95, rho=2.0):
    losses = {'ce': (1 - alpha) * F.cross_entropy(z, target)}
    ordered = {'kd-i': lambda: _calibrate(t.detach().float(), target, 'cpu'), 'kd-id': lambda: t}.get(method)
    ordered = ordered() if ordered else None
    losses['kd'] = alpha * frozen_kd_div(z, ordered if ordered is not None and mode == 'replace' else t, T)
    if ordered is not None and mode == 'add':
        losses['iso' if method == 'kd-i' else 'id'] = rho * frozen_kd_div(z, ordered, T)
    if method == 'kd-p':
        losses['penalty'] = rho * frozen_penalty(z, target)
    return sum(losses.values()), losses


def study_batch(mix, seed=0, B=64, C=10):
    torch.manual_seed(seed)
    x, y = torch.randn(B, 1, 8, 8), torch.randint(0, C, (B,))
    mixed, target = Mixer(mix, C)(x, y)
    student, teacher = torch.nn.Linear(64, C), torch.nn.Linear(64, C)
    with torch.no_grad():
        t = teacher(mixed.flatten(1)).float().clone() * 3
    return mixed.flatten(1), target, student, t


@pytest.mark.parametrize('mix', ['mixup', 'cutmix'])
@pytest.mark.parametrize('bf16', [False, True])
@pytest.mark.parametrize('method, mode', [('kd', 'add'), ('kd-i', 'add'), ('kd-i', 'replace'), ('kd-id', 'add'),
                                          ('kd-p', 'add')])
def test_study_losses_and_gradients_are_bit_identical(mix, bf16, method, mode):
    x, target, student, t = study_batch(mix)
    assert ((target == 0).sum(1) >= 8).all() and target.dtype == torch.float32      # the study's targets
    results = []
    for loss_of in (lambda z: frozen_kd_loss(method, mode, z, t, target),
                    lambda z: (lambda o: (o.loss, o.losses))(KDLoss(method, isotonic_mode=mode, check_inputs=False)(
                        z, t, target)),
                    lambda z: (lambda o: (o.loss, o.losses))(KDLoss(method, isotonic_mode=mode)(z, t, target))):
        student.zero_grad()
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            z = student(x) * 3
            z.retain_grad()
            loss, losses = loss_of(z)
        loss.backward()
        results.append((loss.detach(), {k: v.detach() for k, v in losses.items()}, z.grad, student.weight.grad.clone()))
    ref = results[0]
    for new in results[1:]:
        assert torch.equal(new[0], ref[0]) and list(new[1]) == list(ref[1])
        assert all(torch.equal(new[1][k], ref[1][k]) for k in ref[1])
        assert torch.equal(new[2], ref[2]) and torch.equal(new[3], ref[3])


@pytest.mark.parametrize('bf16', [False, True])
def test_study_crd_loss_and_memory_are_bit_identical(bf16):
    "CRDLoss with its batch checks against the frozen forward, over three steps of one memory bank."
    x, _, _, _ = study_batch('mixup')
    runs = []
    for frozen in (True, False):
        torch.manual_seed(1)
        crd = CRDLoss(16, 24, torch.arange(200) % 10, feat_dim=8, nce_n=32)
        fs_lin, ft_lin = torch.nn.Linear(64, 16), torch.nn.Linear(64, 24)
        out = []
        for step in range(3):
            index = torch.randperm(200)[:len(x)]
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
                fs = fs_lin(x + step)
                with torch.no_grad():
                    ft = ft_lin(x - step).float()
                if frozen:
                    with torch.autocast('cpu', enabled=False):
                        v_s, v_t = crd.embed_s(fs.float()), crd.embed_t(ft.float())
                        lp_s, lp_t = crd.memory(v_s, v_t, index)
                        loss = nce_loss(lp_s, 200) + nce_loss(lp_t, 200)
                else:
                    loss = crd(fs, ft, index)
            grad = torch.autograd.grad(loss, fs_lin.weight)[0]
            out.append((loss.detach(), grad, crd.memory.memory_s.clone(), crd.memory.memory_t.clone(),
                        crd.memory.Z.clone()))
        runs.append(out)
    for a, b in zip(*runs):
        assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_penalty_labels_match_the_study_definition_on_its_targets():
    "On the study's targets the tiers' labels are exactly `target > 0`: the same penalty, to the bit."
    for mix in ('mixup', 'cutmix'):
        for seed in range(5):
            _, target, _, t = study_batch(mix, seed)
            z = torch.randn_like(t) * 3
            assert torch.equal(isotonic_penalty(z, target), frozen_penalty(z, target))


# ---- what KDLoss accepts now -----------------------------------------------------------------------------------------

def test_bf16_targets_sum_to_one_within_bf16_resolution():
    "A bf16 two-way row misses 1e-3 often (lam and 1 - lam rounded apart); within bf16's eps it is accepted."
    lam = torch.rand(1000, 1, generator=torch.Generator().manual_seed(0))
    target = torch.cat([lam, 1 - lam, torch.zeros(1000, 8)], 1).bfloat16()
    assert ((target.float().sum(1) - 1).abs() > 1e-3).float().mean() > 0.2
    z, t = torch.randn(1000, 10), torch.randn(1000, 10)
    for method in ('kd', 'kd-i', 'kd-p'):
        assert torch.isfinite(KDLoss(method)(z, t, target).loss)
    with pytest.raises(ValueError, match='sums to 1.1'):
        KDLoss()(z, t, (target.float() * 1.1).bfloat16())


def test_float16_logits_do_not_overflow_and_empty_batches_are_zero():
    z = (1e4 * torch.randn(8, 10)).half().requires_grad_()
    w = F.one_hot(torch.arange(8) % 10, 10).float()
    out = KDLoss('kd-p')(z, z.detach(), w.half())
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all()
    assert not torch.isfinite(F.cross_entropy(z.detach(), w.half()))               # what float16 alone would give
    for method in ('kd', 'kd-i', 'kd-p', 'kd-id'):
        e = torch.zeros(0, 10, requires_grad=True)
        out = KDLoss(method)(e, torch.zeros(0, 10), torch.zeros(0, 10))
        out.loss.backward()
        assert out.loss.item() == 0.0 and all(v.item() == 0.0 for v in out.losses.values()) and e.grad.shape == (0, 10)


def test_masked_teacher_class_gives_finite_losses():
    t = torch.randn(16, 10)
    t[:, 7] = -float('inf')
    w = torch.zeros(16, 10)
    w[:, 0], w[:, 1] = 0.6, 0.4
    z = torch.randn(16, 10, requires_grad=True)
    for method in ('kd', 'kd-i', 'kd-p', 'kd-id'):
        out = KDLoss(method)(z, t, w)
        out.loss.backward()
        assert torch.isfinite(out.loss) and torch.isfinite(z.grad).all(), method
    with pytest.raises(ValueError, match='student_logits has NaN or inf'):
        KDLoss()(t, t, w)


def _compiled_kd_i_matches_eager(device: str):
    "KD-i's loss compiled with fullgraph=True (no graph break) equals eager, value and gradient; a NaN is refused."
    import torch._dynamo
    from isokd.functional import kd_i_loss
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    B, C = 32, 10
    z = torch.randn(B, C, generator=g).to(device).requires_grad_()
    t = torch.randn(B, C, generator=g).to(device)
    lam = torch.rand(B, 1, generator=g)
    a, b = torch.randint(0, C, (B,), generator=g), torch.randint(0, C, (B,), generator=g)
    w = (lam * F.one_hot(a, C) + (1 - lam) * F.one_hot(b, C)).to(device)
    compiled = torch.compile(kd_i_loss, fullgraph=True)
    out, eager = compiled(z, t, w), kd_i_loss(z, t, w)
    assert out.item() == pytest.approx(eager.item(), rel=1e-6)
    grad, = torch.autograd.grad(out, z)
    assert torch.allclose(grad, torch.autograd.grad(eager, z)[0], atol=1e-7)
    bad = t.clone()
    bad[0, 0] = float('nan')
    with pytest.raises(RuntimeError, match='teacher_logits has NaN or inf'):
        compiled(z, bad, w)
        if device == 'cuda':
            torch.cuda.synchronize()


def test_kd_i_compiles_fullgraph_on_cpu():
    _compiled_kd_i_matches_eager('cpu')


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_kd_i_compiles_fullgraph_on_cuda():
    _compiled_kd_i_matches_eager('cuda')


@pytest.mark.parametrize('bf16', [False, True])
def test_the_distiller_counts_its_teachers_order_as_the_loop_did(bf16):
    "KD-i's epoch record equals TeacherOrder over the same batches, computed outside the step (and its autocast)."
    from isokd.order import TeacherOrder
    from isokd.loop import autocast
    s, t = _pair()
    kd = kd_of(s, t, calibration='isotonic').train()
    by_hand = TeacherOrder()
    for seed in range(3):
        x, target = _batch(seed)
        with autocast(x.device, bf16):
            kd(x, target)
        teacher_logits = kd.teacher_logits(x)
        by_hand.update(teacher_logits, target, isotonic_calibrate(teacher_logits, target))
    assert kd.epoch_record() == {'teacher_order': by_hand.result()}
    assert kd.epoch_record() == {}
