"""CRD: gradients into the student's backbone, the memory bank under mixing, the NCE loss by hand,
runs and their refusals."""
import math
import time
from dataclasses import fields

import pytest
import torch

import isokd.runs
from isokd.config import CRDConfig
from isokd.crd import ContrastMemory, max_negatives
from isokd.functional import nce_loss
from isokd.runs import distill_crd
from isokd.mixing import Mixer
from isokd.models import create_model
from isokd.runs import read_metrics
from conftest import papermill, kd_of, crd_of

N_CLASSES = 4
LABELS = torch.arange(64) % N_CLASSES          # 64 training images, 16 per class: at most 48 negatives
INDEX = torch.tensor([5, 40, 17, 2, 63, 28])


@pytest.fixture
def pair():
    torch.manual_seed(0)
    return create_model('resnet8', N_CLASSES), create_model('resnet14', N_CLASSES)


def batch(mixup='mixup'):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(len(INDEX), 3, 32, 32, generator=g)
    return Mixer(mixup, N_CLASSES)(x, LABELS[INDEX])


@pytest.mark.parametrize('mixup', ['none', 'mixup', 'cutmix'])
def test_crd_gradient_reaches_the_students_first_convolution(pair, mixup):
    student, teacher = pair
    x, target = batch(mixup)
    out = crd_of(student, teacher, LABELS, nce_n=32)(x, target, INDEX)
    first_conv = next(m for m in student.modules() if isinstance(m, torch.nn.Conv2d))
    g = torch.autograd.grad(out.losses['crd'], first_conv.weight)[0]
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize('dense', [True, False])
def test_memory_rows_updated_are_exactly_the_batch_dataset_indices(pair, dense):
    student, teacher = pair
    crd = crd_of(student, teacher, LABELS, nce_n=32)
    mem = crd.crd.memory
    mem.dense = dense
    for mixup in ('cutmix', 'mixup'):
        x, target = batch(mixup)       # row i keeps its own image x_a = training image INDEX[i]
        before = mem.memory_s.clone(), mem.memory_t.clone()
        crd(x, target, INDEX)
        for b, after in zip(before, (mem.memory_s, mem.memory_t)):
            assert torch.where((after != b).any(1))[0].tolist() == sorted(INDEX.tolist())
            torch.testing.assert_close(after[INDEX].norm(dim=1), torch.ones(len(INDEX)))


def test_both_ways_of_scoring_give_the_same_loss(pair):
    student, teacher = pair
    x, target = batch()
    losses = []
    for dense in (True, False):
        torch.manual_seed(3)
        crd = crd_of(student, teacher, LABELS, nce_n=32)
        crd.crd.memory.dense = dense
        torch.manual_seed(4)
        losses.append(crd(x, target, INDEX).losses['crd'])
    torch.testing.assert_close(losses[0], losses[1])


def test_nce_loss_small_case_by_hand():
    # N = 10 images, K = 2 negatives: noise mass K/N = 0.2. P = (0.2, 0.05, 0.3) for (positive, negative, negative):
    # h(pos) = 0.2 / 0.4, 1 - h(neg1) = 0.2 / 0.25, 1 - h(neg2) = 0.2 / 0.5.
    p = torch.tensor([[0.2, 0.05, 0.3]])
    assert nce_loss(p.log(), 10).item() == pytest.approx(-(math.log(0.5) + math.log(0.8) + math.log(0.4)), rel=1e-6)
    # a batch of two rows is the mean of the rows
    p2 = torch.tensor([[0.2, 0.05, 0.3], [0.1, 0.1, 0.1]])
    row2 = -(math.log(0.1 / 0.3) + 2 * math.log(0.2 / 0.3))
    assert nce_loss(p2.log(), 10).item() == pytest.approx((-(math.log(0.5) + math.log(0.8) + math.log(0.4)) + row2) / 2,
                                                          rel=1e-6)


def _repdistiller_step(mem_v1, mem_v2, Z, v1, v2, y, idx, T, momentum, eps=1e-7):
    "RepDistiller's ContrastMemory.forward + ContrastLoss (student v1, teacher v2), ported line by line."
    n_data, (bsz, k1) = mem_v1.shape[0], idx.shape
    out_v2 = torch.exp(torch.bmm(mem_v1[idx.view(-1)].view(bsz, k1, -1), v2[:, :, None]) / T)
    out_v1 = torch.exp(torch.bmm(mem_v2[idx.view(-1)].view(bsz, k1, -1), v1[:, :, None]) / T)
    if Z[0] < 0:
        Z[0] = out_v1.mean().item() * n_data
    if Z[1] < 0:
        Z[1] = out_v2.mean().item() * n_data
    out_v1, out_v2 = out_v1 / Z[0], out_v2 / Z[1]
    with torch.no_grad():
        for mem, v in ((mem_v1, v1), (mem_v2, v2)):
            pos = mem[y] * momentum + v * (1 - momentum)
            mem.index_copy_(0, y, pos / pos.pow(2).sum(1, keepdim=True).pow(0.5))
    def contrast_loss(x):
        x = x.squeeze(2)
        m, Pn = x.size(1) - 1, 1 / n_data
        log_D1 = (x[:, 0] / (x[:, 0] + m * Pn + eps)).log()
        log_D0 = ((m * Pn) / (x[:, 1:] + m * Pn + eps)).log()
        return -(log_D1.sum() + log_D0.sum()) / bsz
    return contrast_loss(out_v1) + contrast_loss(out_v2)


def test_crd_loss_matches_repdistiller():
    torch.manual_seed(0)
    labels = LABELS[torch.randperm(len(LABELS))]
    crd = crd_of(create_model('resnet8', N_CLASSES), create_model('resnet8', N_CLASSES), labels, nce_n=40).crd
    mem_v1, mem_v2, Z = crd.memory.memory_s.clone(), crd.memory.memory_t.clone(), [-1., -1.]
    for step in range(3):
        f_s, f_t, index = torch.randn(6, 64), torch.randn(6, 64), torch.randperm(len(labels))[:6]
        contrast_idx = crd.memory.sample(index)
        ours = crd(f_s, f_t, index, contrast_idx)
        v1, v2 = crd.embed_s(f_s), crd.embed_t(f_t)
        theirs = _repdistiller_step(mem_v1, mem_v2, Z, v1, v2, index, contrast_idx, 0.07, 0.5)
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(crd.memory.memory_s, mem_v1)
        torch.testing.assert_close(crd.memory.memory_t, mem_v2)
        torch.testing.assert_close(crd.memory.Z, torch.tensor(Z))


def test_negatives_are_of_other_classes_and_the_positive_is_the_index():
    torch.manual_seed(0)
    labels = LABELS[torch.randperm(len(LABELS))]
    mem = ContrastMemory(8, labels, nce_n=48)
    idx = mem.sample(INDEX)
    assert idx.shape == (len(INDEX), 49) and idx[:, 0].tolist() == INDEX.tolist()
    assert (labels[idx[:, 1:]] != labels[INDEX][:, None]).all()
    assert max_negatives(labels) == 48
    with pytest.raises(ValueError, match='nce_n=49.*at most 48'):
        ContrastMemory(8, labels, nce_n=49)


@pytest.mark.parametrize('calibration,mode,keys', [
    ('none', 'add', {'ce', 'kd', 'crd'}),
    ('isotonic', 'add', {'ce', 'kd', 'iso', 'crd'}),
    ('isotonic', 'replace', {'ce', 'kd', 'crd'}),
    ('isotonic_appr', 'add', {'ce', 'kd', 'penalty', 'crd'}),
])
def test_crd_variants_are_the_kd_variant_plus_beta_crd(pair, calibration, mode, keys):
    student, teacher = pair
    x, target = batch()
    kw = dict(calibration=calibration, isotonic_mode=mode)
    crd = crd_of(student, teacher, LABELS, nce_n=32, **kw)(x, target, INDEX).losses
    kd = kd_of(student, teacher, **kw)(x, target).losses
    assert set(crd) == keys
    for k, v in kd.items():
        torch.testing.assert_close(crd[k], v)
    outs = []
    for beta in (0.8, 1.6):
        torch.manual_seed(5)
        d = crd_of(student, teacher, LABELS, nce_n=32, beta=beta, **kw)
        outs.append(d(x, target, INDEX).losses['crd'])
    torch.testing.assert_close(outs[1], 2 * outs[0])


def test_methods_and_paper_defaults():
    syn = dict(dataset='synthetic', nce_n=64)
    assert [CRDConfig(**syn, mixup=m, calibration=c).method for m, c in
            [('none', 'none'), ('mixup', 'none'), ('cutmix', 'isotonic'), ('mixup', 'isotonic_appr')]] == \
           ['CRD', 'CRD-aug', 'CRD-i', 'CRD-p']
    d = {f.name: f.default for f in fields(CRDConfig)}
    # the paper's, but nce_n: the cpu scale's 2,500 training images offer at most 2,250 negatives
    assert (d['beta'], d['feat_dim'], d['nce_n'], d['nce_t'], d['nce_m']) == (0.8, 128, 2048, 0.07, 0.5)
    assert CRDConfig(**syn).path.parent.name == 'crd'


@pytest.mark.parametrize('param,value', [('beta', -0.1), ('nce_t', 0.0), ('nce_t', -1.0), ('nce_m', -0.1),
                                         ('nce_m', 1.5), ('feat_dim', 0), ('feat_dim', 1.5), ('nce_n', 0),
                                         ('nce_n', 461)])
def test_bad_crd_parameters_fail_naming_the_parameter(tmp_path, param, value):
    with pytest.raises(ValueError, match=f'{param}={value!r}'):
        distill_crd(**(dict(dataset='synthetic', nce_n=64, out_dir=str(tmp_path/'x')) | {param: value}))
    assert not (tmp_path/'x').exists()


def test_too_many_negatives_fail_before_any_training(tmp_path, monkeypatch):
    monkeypatch.setenv('ISOKD_RUNS', str(tmp_path/'runs'))    # no cached teacher: one would be trained first
    t0 = time.time()
    with pytest.raises(ValueError, match=r"nce_n=2048 .* at most 460"):
        distill_crd(dataset='synthetic', device='cpu', out_dir=str(tmp_path/'x'))
    assert not (tmp_path/'x').exists() and not (tmp_path/'runs').exists() and time.time() - t0 < 10


class _Stop(Exception):
    pass


def test_resumed_crd_run_continues_with_the_same_memory(tmp_path, tiny, monkeypatch, capsys):
    # the tiny teacher is trained once and cached for the session
    params = tiny | dict(epochs=2, nce_n=64, progress=False)
    whole = distill_crd(out_dir=str(tmp_path/'whole'), **params)
    evaluate, calls = isokd.runs.evaluate, []
    def stop_in_second_epoch(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise _Stop
        return evaluate(*a, **kw)
    monkeypatch.setattr(isokd.runs, 'evaluate', stop_in_second_epoch)
    with pytest.raises(_Stop):
        distill_crd(out_dir=str(tmp_path/'cut'), **params)
    monkeypatch.setattr(isokd.runs, 'evaluate', evaluate)
    state = torch.load(tmp_path/'cut'/'checkpoint.pt', weights_only=True)['state']
    assert ({'crd.memory.memory_s', 'crd.memory.memory_t', 'crd.memory.Z'} <= set(state)
            and (state['crd.memory.Z'] > 0).all())
    capsys.readouterr()
    resumed = distill_crd(out_dir=str(tmp_path/'cut'), **params)
    assert 'Resuming' in capsys.readouterr().out

    def strip(m):
        return [{k: v for k, v in r.items() if k not in ('seconds', 'images_per_s')} for r in m['history']]

    assert resumed['finished'] and strip(resumed) == strip(whole)


def test_papermill_tiny_crd_run(tmp_path, tiny):
    out = tmp_path/'crd'
    r = papermill('run_crd.ipynb', tmp_path/'out.ipynb', calibration='isotonic', nce_n=64, out_dir=out, **tiny)
    assert r.returncode == 0, r.stderr[-3000:]
    m = read_metrics(out)
    assert m['finished'] and m['method'] == 'CRD-i' and len(m['history']) == 2
    assert m['params']['kind'] == 'crd' and m['params']['nce_n'] == 64 and m['params']['beta'] == 0.8
    assert set(m['history'][0]['losses']) == {'ce', 'kd', 'iso', 'crd'}
    assert all(math.isfinite(r['train_loss']) for r in m['history'])
    assert 0 <= m['test_acc_last'] <= m['test_acc_best'] <= 1
    assert (out/'model.pt').is_file() and not (out/'checkpoint.pt').exists()


# ---- a bad batch never reaches the memory (issue 33) ---------------------------------------------------------------

def _fresh_crd():
    from isokd.crd import CRDLoss
    torch.manual_seed(3)
    return CRDLoss(8, 12, LABELS, feat_dim=4, nce_n=16)


def _bad_batches(f_s, f_t, index):
    nan_s = f_s.clone()
    nan_s[1, 2] = float('nan')
    inf_t = f_t.clone()
    inf_t[0, 0] = float('inf')
    return {'nan student feature': (nan_s, f_t, index), 'inf teacher feature': (f_s, inf_t, index),
            'empty batch': (f_s[:0], f_t[:0], index[:0]), 'index out of range': (f_s, f_t, index + len(LABELS))}


@pytest.mark.parametrize('bad', ['nan student feature', 'inf teacher feature', 'empty batch', 'index out of range'])
@pytest.mark.parametrize('first', [True, False])
def test_a_refused_batch_leaves_the_next_clean_loss_as_if_never_seen(bad, first):
    "Refused before Z or a memory row is touched: first batch or later, the run goes on as one that never saw it."
    g = torch.Generator().manual_seed(2)
    clean = [(torch.randn(6, 8, generator=g), torch.randn(6, 12, generator=g), torch.randperm(64, generator=g)[:6])
             for _ in range(2)]
    never, seen = _fresh_crd(), _fresh_crd()
    losses = []
    for crd in (never, seen):
        out = []
        for step, batch in enumerate(clean):
            if crd is seen and (step == 0) == first:
                before = (crd.memory.memory_s.clone(), crd.memory.memory_t.clone(), crd.memory.Z.clone())
                with pytest.raises(ValueError):
                    crd(*_bad_batches(*batch)[bad])
                after = (crd.memory.memory_s, crd.memory.memory_t, crd.memory.Z)
                assert all(torch.equal(a, b) for a, b in zip(before, after))
            torch.manual_seed(10 + step)
            out.append(crd(*batch))
        losses.append(out)
    assert all(torch.isfinite(x) for x in losses[1])
    assert all(torch.equal(a, b) for a, b in zip(*losses))
