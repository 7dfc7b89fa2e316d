"docs/recipes.md: every python block runs as written, and computes what the page says it does."
import random
import re

import numpy as np
import pytest
import torch
import yaml

import isokd
from conftest import ROOT

PAGE = ROOT/'docs'/'recipes.md'
BLOCK = re.compile(r'^```(python|yaml)\n(.*?)^```', re.S | re.M)


def blocks(lang='python'):
    "(section, first line, source) of the page's `lang` blocks, in order; section is the '## ' heading's first word."
    text = PAGE.read_text()
    found = []
    for m in BLOCK.finditer(text):
        if m.group(1) == lang:
            heading = re.findall(r'^## (\S+)', text[:m.start()], re.M)
            found.append((heading[-1].rstrip(':') if heading else '', text.count('\n', 0, m.start(2)) + 1,
                          m.group(2)))
    return found


def run(section, index=0):
    "The namespace of the section's `index`-th python block after running it, fresh."
    _, line, source = [b for b in blocks() if b[0] == section][index]
    # padded so that a traceback names the block's line of the page
    namespace = {'__name__': f'recipes_{section}'}
    exec(compile('\n' * (line - 1) + source, str(PAGE), 'exec'), namespace)
    return namespace


def test_the_page_has_its_recipes():
    assert [b[0] for b in blocks()] == ['timm', 'timm', 'mdistiller', 'torchdistill']
    assert len(blocks('yaml')) == 1


@pytest.mark.parametrize('index', range(len(blocks())), ids=lambda i: f'{blocks()[i][0]}-{i}')
def test_every_python_block_runs_as_written(index):
    torch.manual_seed(0)
    section, line, source = blocks()[index]
    exec(compile('\n' * (line - 1) + source, str(PAGE), 'exec'), {'__name__': f'recipes_{section}'})


# timm

def timm_target(mixup, images, labels, smoothing):
    "timm's mixed target of `images` with the draws of seed 0 and this label smoothing."
    mixup.label_smoothing = smoothing
    # timm draws lam, the mixup/cutmix switch and the box from NumPy's global generator
    np.random.seed(0)
    random.seed(0)
    return mixup(images.clone(), labels)


def test_timm_label_smoothing_changes_neither_the_calibration_nor_the_penalty():
    ns = run('timm')
    assert ns['criterion'].method == 'kd-i' and ns['mixup'].label_smoothing == 0.1
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)
    teacher_logits, student_logits = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g)
    (x0, w0), (x1, w1) = (timm_target(ns['mixup'], images, labels, s) for s in (0.0, 0.1))
    # the same mix; the smoothed target gives every class some weight
    assert torch.equal(x0, x1) and (w0 == 0).any() and (w1 > 0).all() and not torch.equal(w0, w1)
    assert torch.allclose(w1.sum(1), torch.ones(16))
    assert torch.equal(isokd.isotonic_calibrate(teacher_logits, w0), isokd.isotonic_calibrate(teacher_logits, w1))
    p0, p1 = (isokd.isotonic_penalty(student_logits, w) for w in (w0, w1))
    assert p0 > 0 and torch.equal(p0, p1)
    p0, p1 = (isokd.functional.kd_p_loss(student_logits, teacher_logits, w) for w in (w0, w1))
    # only the cross-entropy sees the smoothing
    assert not torch.equal(p0, p1)


def test_timm_loss_is_finite_and_reaches_only_the_student():
    ns = run('timm')
    loss, loss_p = ns['loss'], ns['loss_p']
    assert loss.ndim == 0 and torch.isfinite(loss) and loss_p.ndim == 0 and torch.isfinite(loss_p)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ns['student'].parameters())
    assert all(p.grad is None for p in ns['teacher'].parameters())
    # the two-line loss is KDLoss('kd-i') on the recipe's batch, and kd_p_loss its KD-p
    student, images, t, w = ns['student'], ns['images'], ns['teacher_logits'], ns['target']
    assert w.shape == (16, 10) and (w > 0).all()
    assert torch.equal(loss, isokd.functional.kd_i_loss(student(images), t, w))
    assert torch.equal(loss_p, isokd.KDLoss('kd-p')(student(images), t, w).loss)


def test_timm_task_returns_isokd_loss_and_keeps_the_teacher_frozen():
    ns = run('timm', 1)
    task, result = ns['task'], ns['result']
    assert set(result) == {'loss', 'output', 'ce', 'kd', 'penalty'} and torch.isfinite(result['loss'])
    assert torch.equal(result['loss'], result['ce'] + result['kd'] + result['penalty'])
    assert not task.teacher.training and task.trainable_module.training
    with torch.no_grad():
        teacher_logits = ns['teacher'](ns['input'])
    expected = isokd.KDLoss('kd-p')(result['output'], teacher_logits, ns['target']).loss
    torch.testing.assert_close(result['loss'], expected)
    assert all(p.grad is None for p in ns['teacher'].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in ns['student'].parameters())


# mdistiller

class Recorder(torch.nn.Module):
    "A mixing transform that keeps what it returned."
    def __init__(self, mix):
        super().__init__()
        self.mix, self.out = mix, None

    def forward(self, *inputs):
        self.out = self.mix(*inputs)
        return self.out


def test_mdistiller_distiller_keeps_the_dominant_labels_and_names_its_losses():
    ns = run('mdistiller')
    distiller = ns['distiller']
    distiller.mix = Recorder(distiller.mix)
    distiller.train()
    image, target = torch.rand(16, 3, 32, 32), torch.randint(0, 10, (16,))
    preds, losses = distiller(image=image, target=target, epoch=1)
    _, soft_target = distiller.mix.out
    assert soft_target.shape == (16, 10) and torch.equal(distiller.train_labels, soft_target.argmax(1))
    assert set(losses) == {'ce', 'kd', 'iso'} and all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    assert preds.shape == (16, 10)
    # the dict is KDLoss('kd-i') of the mixed batch
    mixed = distiller.mix.out[0]
    with torch.no_grad():
        teacher_logits = distiller.teacher(mixed)[0]
    expected = isokd.KDLoss('kd-i')(preds, teacher_logits, soft_target).losses
    assert all(torch.equal(losses[k], expected[k]) for k in expected)


def test_mdistiller_steps_train_the_student_only():
    ns = run('mdistiller')
    distiller, IsotonicKD, TinyNet = ns['distiller'], ns['IsotonicKD'], ns['TinyNet']
    # the recipe ran its steps and ended in eval mode, scoring against the dominant labels
    assert not distiller.training and ns['test_logits'].shape == (8, 10)
    assert distiller.train_labels.shape == (16,) and 0 <= ns['train_acc'] <= 1
    torch.manual_seed(0)
    distiller = IsotonicKD(TinyNet(), TinyNet(), num_classes=10, method='kd-p')
    assert set(map(id, distiller.get_learnable_parameters())) == set(map(id, distiller.student.parameters()))
    student0 = {k: v.clone() for k, v in distiller.student.state_dict().items()}
    teacher0 = {k: v.clone() for k, v in distiller.teacher.state_dict().items()}
    optimizer = torch.optim.SGD(distiller.get_learnable_parameters(), lr=0.05, momentum=0.9)
    distiller.train()
    assert distiller.student.training and not distiller.teacher.training
    for epoch in range(1, 4):
        optimizer.zero_grad()
        preds, losses = distiller(image=torch.rand(16, 3, 32, 32), target=torch.randint(0, 10, (16,)), epoch=epoch)
        assert set(losses) == {'ce', 'kd', 'penalty'}
        sum(v.mean() for v in losses.values()).backward()
        optimizer.step()
    student1, teacher1 = distiller.student.state_dict(), distiller.teacher.state_dict()
    assert not torch.equal(student1['fc.weight'], student0['fc.weight'])
    # the teacher's weights and its batch-norm statistics are untouched: eval mode, no gradient
    assert all(torch.equal(teacher1[k], v) for k, v in teacher0.items())
    assert all(p.grad is None for p in distiller.teacher.parameters())
    distiller.eval()
    image = torch.rand(4, 3, 32, 32)
    assert torch.equal(distiller(image=image), distiller.student(image)[0])


# torchdistill

@pytest.fixture
def td():
    "The torchdistill block's namespace, after running it twice: registering a key again must be harmless."
    run('torchdistill')
    return run('torchdistill')


def io(student_logits, teacher_logits, path='.'):
    return {'student': {path: {'output': student_logits}}, 'teacher': {path: {'output': teacher_logits}}}


@pytest.mark.parametrize('kwargs', [dict(method='kd'), dict(method='kd-i'), dict(method='kd-p'), dict(method='kd-id'),
                                    dict(method='kd-i', temperature=2.0, alpha=0.5, rho=1.0, isotonic_mode='replace')])
def test_torchdistill_registry_loss_is_isokd_loss(td, kwargs):
    from torchdistill.losses.registry import MIDDLE_LEVEL_LOSS_DICT, get_mid_level_loss
    assert MIDDLE_LEVEL_LOSS_DICT['IsotonicKDLoss'] is td['IsotonicKDLoss']
    images, targets, _ = next(iter(td['loader']))
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g)
    loss = get_mid_level_loss({'key': 'IsotonicKDLoss', 'kwargs': kwargs})
    expected = isokd.KDLoss(**kwargs)(z, t, targets).loss
    ios = io(z, t)
    assert torch.equal(loss(ios['student'], ios['teacher'], targets), expected)
    # the logits of another module path, as a configuration names them
    paths = dict(student_module_path='fc', teacher_module_path='fc')
    ios = io(z, t, 'fc')
    loss = get_mid_level_loss({'key': 'IsotonicKDLoss', 'kwargs': kwargs | paths})
    assert torch.equal(loss(ios['student'], ios['teacher'], targets), expected)


def test_torchdistill_collate_mixes_and_passes_supp_dict_through(td):
    from torchdistill.datasets.registry import get_collate_func
    collate = get_collate_func('isokd_mixup_collate')
    assert collate is td['isokd_mixup_collate']
    samples = [(torch.rand(3, 32, 32), i % 10) for i in range(8)]
    torch.manual_seed(0)
    images, target, supp = collate([(x, y, {}) for x, y in samples])
    assert images.shape == (8, 3, 32, 32) and supp == {}
    assert target.shape == (8, 10) and target.dtype == torch.float32 and (target >= 0).all()
    torch.testing.assert_close(target.sum(1), torch.ones(8))
    # two labels per row: a mixed batch, not the one-hot labels
    assert ((target > 0).sum(1) == 2).any()
    # a loader without requires_supp gives pairs
    images, target = collate(samples)
    assert target.shape == (8, 10)


def test_torchdistill_weighted_sum_and_the_alpha_convention(td):
    from torchdistill.losses.registry import get_high_level_loss, get_mid_level_loss
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g)
    _, targets, _ = next(iter(td['loader']))
    mid = {'key': 'IsotonicKDLoss', 'kwargs': {'method': 'kd-p', 'temperature': 4.0, 'alpha': 0.9}}
    criterion = get_high_level_loss({'key': 'WeightedSumLoss', 'kwargs': {'sub_terms': {
        'kd': {'criterion': mid, 'weight': 0.5}}}})
    ios = io(z, t)
    expected = 0.5 * get_mid_level_loss(mid)(ios['student'], ios['teacher'], targets)
    assert torch.equal(criterion(ios, {}, targets), expected)
    # the recipe's criterion trained the student in its loop
    assert torch.isfinite(td['loss']) and td['loss'].requires_grad
    # the page's statement: torchdistill's KDLoss alpha a is isokd's alpha 1 - a, on a clean batch of labels
    labels = torch.randint(0, 10, (16,), generator=g)
    theirs = get_mid_level_loss({'key': 'KDLoss', 'kwargs': dict(
        student_module_path='.', student_module_io='output', teacher_module_path='.', teacher_module_io='output',
        temperature=4.0, alpha=0.9)})(ios['student'], ios['teacher'], labels)
    torch.testing.assert_close(isokd.KDLoss('kd', temperature=4.0, alpha=0.1)(z, t, labels).loss, theirs)


def test_torchdistill_yaml_fragment_names_the_registered_keys(td):
    from torchdistill.datasets.registry import get_collate_func
    from torchdistill.losses.registry import get_high_level_loss
    (_, _, source), = blocks('yaml')
    train = yaml.safe_load(source)['train']
    assert get_collate_func(train['train_data_loader']['collate_fn']) is td['isokd_mixup_collate']
    criterion = get_high_level_loss(train['criterion'])
    sub = criterion.term_dict['kd'][0]
    assert isinstance(sub, td['IsotonicKDLoss']) and sub.loss.method == 'kd-i' and sub.loss.alpha == 0.9
    images, targets, _ = next(iter(td['loader']))
    g = torch.Generator().manual_seed(0)
    z, t = torch.randn(16, 10, generator=g), torch.randn(16, 10, generator=g)
    expected = isokd.KDLoss('kd-i', temperature=4.0, alpha=0.9, rho=2.0)(z, t, targets).loss
    assert torch.equal(criterion(io(z, t), {}, targets), expected)
