"""Every misuse of the public losses answered in the project's words: each message names the argument as the caller
wrote it (student_logits, teacher_logits, target, scores, f_s, f_t, index, labels) and says what to pass instead."""
import math

import pytest
import torch
import torch.nn.functional as F

import isokd
from isokd.crd import CRDLoss

B, C = 4, 10
Z, T = torch.randn(B, C), torch.randn(B, C)
W = 0.7 * F.one_hot(torch.arange(B), C) + 0.3 * F.one_hot(torch.arange(B) + 1, C)
LABELS = torch.arange(40) % 4
FS, FT, INDEX = torch.randn(B, 8), torch.randn(B, 12), torch.tensor([0, 5, 9, 30])


def kd(method='kd', **kw):
    return lambda z=Z, t=T, w=W: isokd.KDLoss(method, **kw)(z, t, w)


def crd():
    torch.manual_seed(0)
    return CRDLoss(8, 12, LABELS, feat_dim=4, nce_n=16)


def nan_at(x, i=1, j=2, value=math.nan):
    x = x.clone()
    x[i, j] = value
    return x


# (what, call, exception, substrings the message must hold: the argument's name and the fix)
CASES = [
    # KDLoss: shapes, named as the caller named them
    ('teacher batch size', lambda: kd()(t=torch.randn(5, C)), ValueError,
     ['student_logits (4, 10) and teacher_logits (5, 10)', 'one shape']),
    ('teacher class count', lambda: kd()(t=torch.randn(B, C + 1)), ValueError, ['teacher_logits (4, 11)', 'one shape']),
    ('target class count', lambda: kd()(w=torch.full((B, C + 1), 1 / 11)), ValueError,
     ['student_logits (4, 10) and target (4, 11)']),
    ('1-d student logits', lambda: kd()(z=torch.randn(C)), ValueError, ['student_logits has shape (10,)',
                                                                        'student_logits[None]']),
    ('3-d teacher logits', lambda: kd()(t=torch.randn(B, C, 1)), ValueError, ['teacher_logits has shape (4, 10, 1)',
                                                                              'want [B, C]']),
    ('no classes', lambda: kd()(z=Z[:, :0], t=T[:, :0], w=W[:, :0]), ValueError, ['student_logits', 'C >= 1']),
    # KDLoss: types
    ('(logits, features) student', lambda: kd()(z=(Z, FS)), TypeError, ['student_logits is a tuple', 'output[0]']),
    ('(logits, features) teacher', lambda: kd()(t=(T, FT)), TypeError, ['teacher_logits is a tuple', 'output[0]']),
    ('list target', lambda: kd()(w=[W]), TypeError, ['target is a list', 'class weights']),
    ('numpy student', lambda: kd()(z=Z.numpy()), TypeError, ['student_logits is a numpy array',
                                                             'torch.from_numpy(student_logits)']),
    ('numpy target', lambda: kd()(w=W.numpy()), TypeError, ['target is a numpy array', 'torch.from_numpy(target)']),
    ('python list logits', lambda: kd()(z=Z.tolist()), TypeError, ['student_logits is a list']),
    ('int student logits', lambda: kd()(z=Z.long()), TypeError, ['student_logits has dtype torch.int64',
                                                                 'student_logits.float()']),
    ('int teacher logits', lambda: kd()(t=T.int()), TypeError, ['teacher_logits has dtype torch.int32',
                                                                'teacher_logits.float()']),
    ('int one-hot target', lambda: kd()(w=F.one_hot(torch.arange(B), C)), TypeError, ['target has dtype torch.int64',
                                                                                       'target.float()']),
    ('meta student', lambda: kd()(z=torch.empty(B, C, device='meta')), ValueError, ['student_logits is a meta tensor',
                                                                                     'load_state_dict']),
    # KDLoss: integer labels
    ('labels for kd-i', lambda: kd('kd-i')(w=torch.arange(B)), ValueError, ["method='kd-i' needs the mixed target",
                                                                            'F.one_hot(labels, C).float()']),
    ('labels for kd-p', lambda: kd('kd-p')(w=torch.arange(B)), ValueError, ["method='kd-p'", 'F.one_hot']),
    ('labels out of range', lambda: kd()(w=torch.arange(B) + C), ValueError, ['target holds labels outside 0..9',
                                                                               'class indices']),
    ('labels of another batch size', lambda: kd()(w=torch.arange(B + 1)), ValueError, ['integer labels target (5,)',
                                                                                       'want [B] labels']),
    # KDLoss: values
    ('nan teacher', lambda: kd()(t=nan_at(T)), ValueError, ['teacher_logits has NaN or inf', 'row 1, class 2',
                                                            'mask a class with -inf']),
    ('+inf teacher', lambda: kd()(t=nan_at(T, value=math.inf)), ValueError, ['teacher_logits has NaN or inf']),
    ('nan student', lambda: kd()(z=nan_at(Z)), ValueError, ['student_logits has NaN or inf',
                                                            "check the student's forward pass"]),
    ('-inf student', lambda: kd()(z=nan_at(Z, value=-math.inf)), ValueError, ['student_logits has NaN or inf']),
    ('nan target', lambda: kd()(w=nan_at(W.float())), ValueError, ['target has NaN or inf', 'class weights']),
    ('negative target', lambda: kd()(w=W - 0.05), ValueError, ['target has negative entries', 'weights >= 0']),
    ('target not summing to 1', lambda: kd()(w=W * 2), ValueError, ['target rows must sum to 1', 'row 0 sums to 2']),
    # the functions
    ('calibrate: tuple scores', lambda: isokd.isotonic_calibrate((T, FT), W), TypeError, ['scores is a tuple',
                                                                                          'output[0]']),
    ('calibrate: labels as target', lambda: isokd.isotonic_calibrate(T, torch.arange(B)), ValueError,
     ['target (4,) holds integer class labels', 'F.one_hot(labels, C).float()']),
    ('calibrate: +inf score', lambda: isokd.isotonic_calibrate(nan_at(T, value=math.inf), W), ValueError,
     ['scores has NaN or inf', 'row 1, class 2: inf']),
    ('calibrate: int scores', lambda: isokd.isotonic_calibrate(T.long(), W), TypeError, ['scores has dtype',
                                                                                          'scores.float()']),
    ('penalty: shapes', lambda: isokd.isotonic_penalty(Z, W[:, :5]), ValueError, ['student_logits (4, 10) and target '
                                                                                  '(4, 5)']),
    ('penalty: numpy target', lambda: isokd.isotonic_penalty(Z, W.numpy()), TypeError, ['target is a numpy array']),
    ('order_stats: nan scores', lambda: isokd.order_stats(nan_at(T), W), ValueError, ['scores has NaN or inf']),
    ('order_stats: meta', lambda: isokd.order_stats(T.to('meta'), W), ValueError, ['scores is a meta tensor']),
    # CRDLoss
    ('crd: student feature size', lambda: crd()(torch.randn(B, 6), FT, INDEX), ValueError,
     ['f_s has 6 features per sample', 's_dim=8', "student's pooled features"]),
    ('crd: teacher feature size', lambda: crd()(FS, torch.randn(B, 5), INDEX), ValueError,
     ['f_t has 5 features per sample', 't_dim=12']),
    ('crd: (logits, features) tuple', lambda: crd()((Z, FS), FT, INDEX), TypeError, ['f_s is a tuple', 'output[1]']),
    ('crd: batch sizes differ', lambda: crd()(FS, FT[:3], INDEX), ValueError, ['f_s has 4 rows but f_t 3']),
    ('crd: empty batch', lambda: crd()(FS[:0], FT[:0], INDEX[:0]), ValueError, ['empty batch', 'skip the step']),
    ('crd: nan student feature', lambda: crd()(nan_at(FS), FT, INDEX), ValueError, ['f_s has NaN or inf']),
    ('crd: inf teacher feature', lambda: crd()(FS, nan_at(FT, value=math.inf), INDEX), ValueError,
     ['f_t has NaN or inf']),
    ('crd: index out of range', lambda: crd()(FS, FT, INDEX + 40), ValueError, ['index holds dataset indices outside '
                                                                                '[0, 40)', 'labels']),
    ('crd: float index', lambda: crd()(FS, FT, INDEX.float()), TypeError, ['index has dtype', 'index.long()']),
    ('crd: index shape', lambda: crd()(FS, FT, INDEX[:, None]), ValueError, ['index has shape (4, 1)', 'want [B]']),
    ('crd: no index', lambda: crd()(FS, FT, None), TypeError, ['index is a NoneType', 'tensor']),
    ('crd: float labels', lambda: CRDLoss(8, 12, LABELS.float(), nce_n=16), TypeError, ['labels has dtype',
                                                                                         'labels.long()']),
    ('crd: one-hot labels', lambda: CRDLoss(8, 12, F.one_hot(LABELS), nce_n=16), ValueError,
     ['labels has shape (40, 4)', 'labels.argmax(1)']),
    ('crd: negative labels', lambda: CRDLoss(8, 12, LABELS - 1, nce_n=16), ValueError, ['labels has negative entries',
                                                                                         '>= 0']),
    ('crd: feature size 0', lambda: CRDLoss(0, 12, LABELS, nce_n=16), ValueError, ['s_dim']),
]


def test_the_table_is_large():
    assert len(CASES) >= 40


@pytest.mark.parametrize('what, call, exc, parts', CASES, ids=[c[0] for c in CASES])
def test_misuse_is_answered_in_the_projects_words(what, call, exc, parts):
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    for part in parts:
        assert part in message, (what, part, message)
    # nothing of torch's own wording
    assert 'Expected' not in message and 'Tensor' not in message.replace('tensor', ''), message


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_devices_must_agree():
    with pytest.raises(ValueError, match=r'teacher_logits .*on cuda.*want one device|one device'):
        isokd.KDLoss()(Z, T.cuda(), W)
    with pytest.raises(ValueError, match='crd_loss.to'):
        crd()(FS.cuda(), FT.cuda(), INDEX.cuda())
