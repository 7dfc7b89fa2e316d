"""Tests of `isokd.calibration`: the batched projection against the cvxpy oracle on >10,000 rows of every tier
structure, property tests (hypothesis), dtypes and devices, the KD-p penalty and the order statistics."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck

from isokd.calibration import isotonic_calibrate, isotonic_penalty, _calibrate
from isokd.order import order_stats
from isokd.reference import isotonic_reference

PATHS = ('cpu', 'sorted', 'general')   # the CPU default, its full-sort fallback, and the device (CUDA) path
KINDS = ('lam>0.5', 'lam<0.5', 'lam=0.5', 'same', 'kway', 'smooth', 'distinct', 'ties', 'signed', 'uniform')
SCORES = ('random', 'teacher', 'adversarial', 'ordered', 'ties')


def make_targets(kind: str, B: int, C: int, g: torch.Generator) -> torch.Tensor:
    "Mixed targets [B, C] (float64) of one tier structure."
    t, r = torch.zeros(B, C, dtype=torch.float64), torch.arange(B)
    a = torch.randint(0, C, (B,), generator=g)
    b = (a + torch.randint(1, C, (B,), generator=g)) % C if C > 1 else a
    u = torch.rand(B, generator=g, dtype=torch.float64)
    if kind in ('lam>0.5', 'lam<0.5', 'lam=0.5'):
        lam = {'lam>0.5': 0.5 + 0.5 * u, 'lam<0.5': 0.5 * u, 'lam=0.5': torch.full_like(u, 0.5)}[kind]
        t[r, a] += lam
        t[r, b] += 1 - lam
    elif kind == 'same':
        t[r, a] = 1.0                                 # a class mixed with itself
    elif kind == 'kway':                                               # 2-4 labels, integer weights: ties are common
        k = min(C, 4)
        idx = torch.rand(B, C, generator=g).argsort(1)[:, :k]
        w = (torch.randint(1, 4, (B, k), generator=g).double()
             * (torch.arange(k) < torch.randint(2, k + 1, (B, 1), generator=g)))
        t.scatter_(1, idx, w / w.sum(1, keepdim=True))
    # mixup with label smoothing 0.1, lam = 0.5 in a third
    elif kind == 'smooth':
        lam = u.clone()
        lam[::3] = 0.5
        t[r, a] += lam
        t[r, b] += 1 - lam
        t = 0.9 * t + 0.1 / C
    elif kind == 'distinct':
        t = torch.rand(B, C, generator=g, dtype=torch.float64)   # one class per tier
    elif kind == 'ties':
        t = torch.randint(0, 3, (B, C), generator=g).double()
    # negative weights, and -0.0 in the same tier as +0.0
    elif kind == 'signed':
        t = 0.5 * torch.randint(-2, 3, (B, C), generator=g).double()
        t[1::2] = torch.where(t[1::2] == 0, -0.0, t[1::2])
    elif kind == 'uniform':
        t[:] = 1.0 / C
    return t


def make_scores(t: torch.Tensor, kind: str, g: torch.Generator, scale: float = 3.0) -> torch.Tensor:
    "Teacher scores for the targets `t` (float64)."
    B, C = t.shape
    s = scale * torch.randn(B, C, generator=g, dtype=torch.float64)
    if kind == 'teacher':
        s = s + 4 * scale * t                        # mostly agrees with the target
    elif kind == 'adversarial':                                        # the labels get the teacher's weakest scores
        order = t.argsort(dim=1, descending=True, stable=True)
        s = torch.empty_like(s).scatter_(1, order, s.sort(1).values)
    elif kind == 'ordered':                                            # already in order: returned unchanged
        jitter = 1e-9 * torch.rand(B, C, generator=g, dtype=torch.float64)
        s = torch.empty_like(s).scatter_(1, (t + jitter).argsort(1, descending=True), s.sort(1, descending=True).values)
    elif kind == 'ties':
        s = s.round()
    return s


def oracle_cases():
    "(C, rows per target kind, rows per cvxpy problem): 10 kinds x (12 x 80 + 160 + 6) = 11,260 rows."
    small = [(C, 80, 80) for C in (2, 3, 4, 5, 6, 8, 10, 12, 16, 17, 20, 32)]
    return small + [(100, 160, 40), (1000, 6, 2)]


def chain_oracle(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """When every class has its own weight the order is a total order, and the projection is scipy's PAV on the scores
    taken in target order (no sort by score involved). Used for 1,000 distinct weights, where cvxpy fails: OSQP runs out
    of iterations on the 1,000-long chain and CLARABEL stops up to 3e-4 (relative) away from the optimum."""
    from scipy.optimize import isotonic_regression
    out = np.empty(tuple(s.shape))
    for r in range(len(s)):
        o = np.argsort(-t[r].numpy(), kind='stable')
        assert len(np.unique(t[r].numpy())) == len(o)
        out[r, o] = isotonic_regression(s[r, o].numpy(), increasing=False).x
    return torch.from_numpy(out)


@pytest.fixture(scope='module')
def oracle_rows():
    "Random rows of every tier structure and score pattern, with their cvxpy projections."
    g = torch.Generator().manual_seed(0)
    out = []
    for C, n, per in oracle_cases():
        for kind in KINDS:
            t = make_targets(kind, n, C, g)
            s = torch.cat([make_scores(t[i::len(SCORES)], sk, g) for i, sk in enumerate(SCORES)])
            t = torch.cat([t[i::len(SCORES)] for i in range(len(SCORES))])
            s32 = s.float().double()                                   # the float32 check gets its own oracle
            if kind == 'distinct' and C >= 1000:   # a chain of 1,000 tiers: cvxpy cannot, see chain_oracle
                ref = torch.cat([chain_oracle(s, t), chain_oracle(s32, t)])
            else:
                ref = isotonic_reference(torch.cat([s, s32]), torch.cat([t, t]), rows_per_problem=per)
            out.append((C, kind, s, t, ref[:n], ref[n:]))
    return out


def test_oracle_covers_10000_rows(oracle_rows):
    assert sum(len(s) for _, _, s, *_ in oracle_rows) >= 10_000
    assert sum(len(s) for C, k, s, *_ in oracle_rows if not (k == 'distinct' and C >= 1000)) >= 10_000   # cvxpy alone
    assert {C for C, *_ in oracle_rows} >= {2, 100, 1000}


@pytest.mark.parametrize('path', PATHS)
def test_matches_oracle_float64(oracle_rows, path):
    for C, kind, s, t, ref, _ in oracle_rows:
        err = (_calibrate(s, t, path) - ref).abs().amax(1)
        tol = 1e-6 * s.abs().amax(1)
        assert (err <= tol).all(), f"C={C} {kind} path={path}: max error {err.max():.3g}"


@pytest.mark.parametrize('path', PATHS)
def test_matches_oracle_float32(oracle_rows, path):
    for C, kind, s, t, _, ref32 in oracle_rows:
        q = _calibrate(s.float(), t.float(), path)
        assert q.dtype == torch.float32
        err = (q.double() - ref32).abs().max()
        assert err <= 1e-4, f"C={C} {kind} path={path}: max error {err:.3g}"


def test_public_function_float64_and_float32(oracle_rows):
    for C, kind, s, t, ref, ref32 in oracle_rows[::3]:
        assert ((isotonic_calibrate(s, t) - ref).abs().amax(1) <= 1e-6 * s.abs().amax(1)).all(), (C, kind)
        assert (isotonic_calibrate(s.float(), t.float()).double() - ref32).abs().max() <= 1e-4, (C, kind)


def test_oracle_defaults_and_clarabel():
    "The oracle's default (OSQP, one QP per row) and CLARABEL (about 1e-6 relative on these degenerate QPs) agree too."
    g = torch.Generator().manual_seed(1)
    for C in (3, 10, 100):
        for kind in KINDS:
            t = make_targets(kind, 4, C, g)
            s = make_scores(t, 'random', g)
            q, tol = isotonic_calibrate(s, t), s.abs().amax(1)
            assert ((q - isotonic_reference(s, t)).abs().amax(1) <= 1e-6 * tol).all(), (C, kind)
            assert ((q - isotonic_reference(s, t, solver='CLARABEL')).abs().amax(1) <= 1e-4 * tol).all(), (C, kind)


def test_fast_path_certifies_typical_rows(monkeypatch):
    "Mixup rows of a teacher-like batch are solved from the topk head: few rows fall back to the full sort."
    import isokd.calibration as cal
    seen = []
    orig = cal._solve_sorted
    monkeypatch.setattr(cal, '_solve_sorted', lambda s, t, exact: seen.append(len(s)) or orig(s, t, exact))
    g = torch.Generator().manual_seed(7)
    for C in (100, 1000):
        t = make_targets('lam>0.5', 256, C, g).float()
        s = make_scores(t, 'teacher', g).float()
        q = isotonic_calibrate(s, t)
        torch.testing.assert_close(q, orig(s, t, True), rtol=0, atol=1e-6)
    assert sum(seen) <= 0.05 * 2 * 256, seen


def test_reference_numpy_in_numpy_out():
    s, t = np.array([[1.6, 0.5, 3.0, 1.5]]), np.array([[0.6, 0.4, 0.0, 0.0]])
    q = isotonic_reference(s, t)
    assert isinstance(q, np.ndarray) and np.allclose(q, [[1.7, 1.7, 1.7, 1.5]], atol=1e-7)
    assert isotonic_reference(torch.tensor(s, dtype=torch.float32), torch.tensor(t)).dtype == torch.float32


def test_lambda_cases_by_hand():
    t = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    cases = {  # target -> projection
        (0.7, 0.3, 0.0, 0.0): [2.0, 2.0, 2.0, 0.0],   # a >= b >= others: all three pool
        (0.3, 0.7, 0.0, 0.0): [1.5, 3.0, 1.5, 0.0],   # b >= a >= others: b stays, a pools with class 2
        (0.5, 0.5, 0.0, 0.0): [1.5, 3.0, 1.5, 0.0],   # a and b free: a pools with class 2
        (1.0, 0.0, 0.0, 0.0): [2.0, 2.0, 2.0, 0.0],   # same class: a above every other
    }
    for w, want in cases.items():
        q = isotonic_calibrate(t, torch.tensor([w]))
        torch.testing.assert_close(q, torch.tensor([want]))


def test_bfloat16_and_half():
    g = torch.Generator().manual_seed(2)
    t = make_targets('lam>0.5', 64, 100, g)
    s = make_scores(t, 'random', g)
    for dt in (torch.bfloat16, torch.float16):
        sl = s.to(dt)
        q = isotonic_calibrate(sl, t.to(dt))
        assert q.dtype == dt
        exact = isotonic_calibrate(sl.float(), t.to(dt).float())          # computed in float32, rounded once
        torch.testing.assert_close(q, exact.to(dt), rtol=0, atol=0)
        ref = isotonic_reference(sl.double(), t.to(dt).double(), rows_per_problem=64)
        assert (q.double() - ref).abs().max() <= 2 * torch.finfo(dt).eps * s.abs().max()


def test_inputs_untouched_and_no_graph():
    g = torch.Generator().manual_seed(3)
    t = make_targets('kway', 32, 50, g).float()
    s = make_scores(t, 'adversarial', g).float().requires_grad_()
    s0, t0 = s.detach().clone(), t.clone()
    for path in PATHS:
        q = _calibrate(s.detach(), t, path)
        assert (q != s0).any()
    q = isotonic_calibrate(s, t)
    assert q.grad_fn is None and not q.requires_grad
    assert torch.equal(s.detach(), s0) and torch.equal(t, t0)
    ti = torch.randn(8, 20)
    with torch.inference_mode():
        tt = ti.clone()
    assert isotonic_calibrate(tt, torch.zeros(8, 20).index_fill_(1, torch.tensor([3]), 1.0)).shape == (8, 20)


def test_shapes_and_errors():
    assert isotonic_calibrate(torch.randn(0, 5), torch.zeros(0, 5)).shape == (0, 5)
    x = torch.randn(4, 1)
    assert torch.equal(isotonic_calibrate(x, torch.ones(4, 1)), x)
    with pytest.raises(ValueError):
        isotonic_calibrate(torch.randn(4, 5), torch.zeros(4, 6))
    with pytest.raises(ValueError):
        isotonic_calibrate(torch.randn(5), torch.zeros(5))
    with pytest.raises(TypeError):
        isotonic_calibrate(torch.zeros(4, 5, dtype=torch.long), torch.zeros(4, 5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')
def test_cuda_matches_cpu_without_sync():
    g = torch.Generator().manual_seed(4)
    for kind in KINDS:
        t = make_targets(kind, 128, 100, g)
        s = make_scores(t, 'random', g)
        for dt in (torch.float64, torch.float32, torch.bfloat16):
            sc, tc = s.to(dt).cuda(), t.to(dt if dt != torch.float64 else dt).cuda()
            torch.cuda.set_sync_debug_mode('error')
            try:
                q = isotonic_calibrate(sc, tc)
            finally:
                torch.cuda.set_sync_debug_mode('default')
            assert q.device.type == 'cuda' and q.dtype == dt
            # both compute in float32 and round to the dtype: a 1-ulp float32 difference on a bfloat16 midpoint
            # moves the result by one bfloat16 ulp, so bfloat16 gets bfloat16's tolerance
            tol = 2 ** -7 if dt == torch.bfloat16 else 1e-5
            torch.testing.assert_close(q.cpu(), isotonic_calibrate(s.to(dt), t.to(dt)),
                                       rtol=tol, atol=tol * s.abs().max().item())


# ---- property tests --------------------------------------------------------------------------------------------------

@st.composite
def problems(draw, max_c: int = 40):
    "A small batch (float64): a target of any tier structure and scores, possibly with ties."
    B, C = draw(st.integers(1, 6)), draw(st.integers(2, max_c))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    t = make_targets(draw(st.sampled_from(KINDS)), B, C, g)
    s = make_scores(t, draw(st.sampled_from(SCORES)), g, scale=draw(st.sampled_from([1e-3, 1.0, 50.0])))
    return s, t, draw(st.sampled_from(PATHS))


def chain_blocks(q, t):
    "For one row: (indices of each maximal run of equal q along the chain)."
    order = np.lexsort((-q, -t))
    runs, start = [], 0
    for i in range(1, len(order) + 1):
        if i == len(order) or q[order[i]] != q[order[start]]:
            runs.append(order[start:i])
            start = i
    return runs


PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(problems())
def test_property_respects_the_order(p):
    s, t, path = p
    q = _calibrate(s, t, path)
    above = t[:, :, None] > t[:, None, :]
    assert (q[:, :, None] >= q[:, None, :])[above].all()


@PROPS
@given(problems())
def test_property_idempotent(p):
    s, t, path = p
    q = _calibrate(s, t, path)
    assert torch.equal(_calibrate(q, t, path), q)


@PROPS
@given(problems())
def test_property_pooled_blocks_keep_their_sums(p):
    s, t, path = p
    q = _calibrate(s, t, path)
    for r in range(len(s)):
        for blk in chain_blocks(q[r].numpy(), t[r].numpy()):
            assert (abs(s[r, blk].sum().item() - q[r, blk].sum().item())
                    <= 1e-9 * (1 + s[r].abs().max().item()) * len(blk))


@PROPS
@given(problems(), st.floats(-100, 100), st.floats(1e-3, 1e3))
def test_property_commutes_with_shift_and_positive_scale(p, c, a):
    s, t, path = p
    q = _calibrate(s, t, path)
    tol = 1e-9 * (1 + abs(c) + a * s.abs().max().item())
    assert (_calibrate(s + c, t, path) - (q + c)).abs().max() <= tol
    assert (_calibrate(a * s, t, path) - a * q).abs().max() <= tol


@PROPS
@given(problems())
def test_property_rows_in_order_unchanged(p):
    s, t, path = p
    g = torch.Generator().manual_seed(int(s.abs().sum().item() * 1e3) % 2**31)
    ordered = make_scores(t, 'ordered', g)
    assert torch.equal(_calibrate(ordered, t, path), ordered)
    q = _calibrate(s, t, path)                                        # and a projection is in order
    assert torch.equal(_calibrate(q, t, path), q)


# ---- the penalty and the statistics -------------------------------------------------------------------------------

def test_penalty_by_hand():
    p = torch.tensor([[0.5, 0.2, 0.3], [0.5, 0.2, 0.3], [0.5, 0.2, 0.3], [0.2, 0.5, 0.3]], dtype=torch.float64)
    w = torch.tensor([[0.7, 0.3, 0.0], [0.3, 0.7, 0.0], [0.5, 0.5, 0.0], [0.4, 0.3, 0.3]])
    P = isotonic_penalty(p.log(), w)
    assert P.dtype == torch.float64
    assert abs(P.item() - ((0.1 + 0.1 + 0.1 + 0.0) / 4 + (0.0 + 0.3 + 0.0 + 0.3) / 4)) < 1e-12


def test_penalty_zero_when_ordered_and_gradient_when_violated():
    g = torch.Generator().manual_seed(5)
    t = make_targets('lam>0.5', 32, 10, g).float()
    z = (10 * t + 0.01 * torch.randn(32, 10, generator=g)).requires_grad_()   # labels on top, in order
    assert isotonic_penalty(z, t).item() == 0.0
    z2 = torch.randn(32, 10, generator=g).requires_grad_()
    P = isotonic_penalty(z2, t)
    P.backward()
    assert P.item() > 0 and torch.isfinite(z2.grad).all() and z2.grad.abs().sum() > 0
    assert abs(z2.grad.sum(1)).max() < 1e-6                                   # through a softmax: rows sum to 0


def test_penalty_rows_without_outside_classes():
    z = torch.randn(4, 5, requires_grad=True)
    P = isotonic_penalty(z, torch.full((4, 5), 0.2))                          # S is every class, one weight
    assert P.item() == 0.0
    P.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_order_stats_by_hand():
    s = torch.tensor([[3., 2., 1., 0.], [0., 1., 2., 3.], [2., 2., 5., 0.], [1., 0., 0., 3.]])
    w = torch.tensor([[.6, .4, 0, 0], [.6, .4, 0, 0], [.5, .5, 0, 0], [1., 0, 0, 0]])
    st_ = order_stats(s, w)
    assert set(st_) == {'kendall_tau', 'top2_ratio', 'violation_rate'} and all(type(v) is float for v in st_.values())
    assert abs(st_['kendall_tau'] - (1 - 1 + 0 + 1 / 3) / 4) < 1e-6
    assert st_['top2_ratio'] == 0.75 and st_['violation_rate'] == 0.75
    after = order_stats(isotonic_calibrate(s, w), w)
    assert after['violation_rate'] == 0.0 and after['kendall_tau'] >= st_['kendall_tau']


def test_order_stats_large_rows_in_chunks():
    g = torch.Generator().manual_seed(6)
    t = make_targets('lam>0.5', 40, 1000, g).float()
    s = make_scores(t, 'random', g).float()
    st_ = order_stats(s, t)
    assert -1 <= st_['kendall_tau'] <= 1 and 0 <= st_['top2_ratio'] <= 1 and 0 < st_['violation_rate'] <= 1
    assert order_stats(isotonic_calibrate(s, t), t)['violation_rate'] == 0.0


# ---- label smoothing, masked classes, refusals (issue 33) -----------------------------------------------------------

def smooth(w: torch.Tensor, s: float) -> torch.Tensor:
    "Label smoothing of strength `s` as timm applies it to each one-hot row: `off = s / C`, `on = 1 - s + off`."
    return w * (1 - s) + s / w.shape[1]


def mixed_target(C: int, a: int, b: int, lam: float, s: float = 0.0) -> torch.Tensor:
    "timm's Mixup target of one row (float32): `lam` of the smoothed one-hot of `a`, the rest of `b`'s."
    off, on = s / C, 1 - s + s / C
    ya, yb = torch.full((1, C), off), torch.full((1, C), off)
    ya[0, a], yb[0, b] = on, on
    return ya * lam + yb * (1 - lam)


@settings(max_examples=200, deadline=None)
@given(st.integers(3, 40), st.integers(0, 10**6), st.integers(1, 63), st.floats(0.001, 0.9), st.booleans())
def test_property_smoothing_changes_neither_penalty_nor_calibration(C, seed, lam64, s, same):
    "KD-p and KD-i read the tiers of the weights: a smoothed target gives the unsmoothed target's numbers, to the bit."
    g = torch.Generator().manual_seed(seed)
    a = int(torch.randint(0, C, (1,), generator=g))
    b = a if same else (a + int(torch.randint(1, C, (1,), generator=g))) % C
    lam = lam64 / 64
    z = 3 * torch.randn(1, C, generator=g)
    plain, smoothed = mixed_target(C, a, b, lam), mixed_target(C, a, b, lam, s)
    assert torch.equal(isotonic_penalty(z, smoothed), isotonic_penalty(z, plain))
    assert torch.equal(isotonic_calibrate(z, smoothed), isotonic_calibrate(z, plain))


def test_smoothing_sweep_of_k_way_mixes():
    "k-way mixes (1-4 labels, ties included) smoothed at strengths up to 0.9: the same penalty and projection."
    g = torch.Generator().manual_seed(11)
    for C in (4, 10, 100):
        w = make_targets('kway', 256, C, g).float()
        z = make_scores(w.double(), 'random', g).float()
        for s in (0.01, 0.1, 0.5, 0.9):
            assert torch.equal(isotonic_penalty(z, smooth(w, s)), isotonic_penalty(z, w)), (C, s)
            assert torch.equal(isotonic_calibrate(z, smooth(w, s)), isotonic_calibrate(z, w)), (C, s)


def test_penalty_of_the_issue_row_is_kept_under_smoothing():
    z, w = torch.tensor([[5., 1., 3., 0.]]), torch.tensor([[.7, .3, 0., 0.]])
    assert abs(isotonic_penalty(z, w).item() - 0.1008) < 1e-4
    assert torch.equal(isotonic_penalty(z, smooth(w, 0.1)), isotonic_penalty(z, w))


def test_masked_teacher_class_is_exact():
    "-inf: the classes from the first -inf on the chain are -inf, the rest is the projection of the finite scores."
    inf = float('inf')
    w = torch.tensor([[.7, .3, 0., 0.]])
    assert torch.equal(isotonic_calibrate(torch.tensor([[2., 1., 0., -inf]]), w), torch.tensor([[2., 1., 0., -inf]]))
    g = torch.Generator().manual_seed(12)
    for kind in ('lam>0.5', 'kway', 'smooth', 'same'):
        for C in (8, 100, 1000):
            t = make_targets(kind, 64, C, g)
            s = make_scores(t, 'adversarial', g)
            foreign = t == t.amin(1, keepdim=True)
            mask = foreign & (torch.rand(64, C, generator=g, dtype=torch.float64) < 0.3)
            mask[foreign.all(1)] = False                                # rows with labels only: no foreign class
            masked = s.masked_fill(mask, -inf)
            for dt in (torch.float64, torch.float32):
                q = isotonic_calibrate(masked.to(dt), t.to(dt))
                assert torch.equal(q.isneginf(), mask), (kind, C)
                # the same as the projection with those scores far below every other (they never pool)
                far = isotonic_calibrate(s.masked_fill(mask, -1e6).to(dt), t.to(dt))
                assert torch.equal(q[~mask], far[~mask]), (kind, C, dt)
    # a masked label takes every class ranked below it
    q = isotonic_calibrate(torch.tensor([[1., -inf, 2., 0.]]), w)
    assert torch.equal(q, torch.tensor([[1., -inf, -inf, -inf]]))
    for path in PATHS:       # the device path too, on the CPU
        q = _calibrate(torch.tensor([[2., 1., 0., -1e30]]), w, path)
        assert torch.equal(q[:, :3], torch.tensor([[2., 1., 0.]]))


@pytest.mark.parametrize('bad, name', [
    (lambda: isotonic_calibrate(torch.tensor([[2., 1., 0., float('inf')]]), torch.tensor([[.7, .3, 0., 0.]])),
     'scores has NaN or inf'),
    (lambda: isotonic_calibrate(torch.tensor([[2., 1., 0., float('nan')]]), torch.tensor([[.7, .3, 0., 0.]])),
     'scores has NaN or inf'),
    (lambda: isotonic_calibrate(torch.randn(1, 4), torch.tensor([[.7, .3, float('nan'), 0.]])), 'target has NaN'),
    (lambda: isotonic_penalty(torch.randn(1, 4), torch.tensor([[.7, .3, float('nan'), 0.]])), 'target has NaN'),
    (lambda: order_stats(torch.tensor([[2., 1., 0., float('inf')]]), torch.tensor([[.7, .3, 0., 0.]])),
     'scores has NaN or inf'),
])
def test_non_finite_inputs_are_refused_by_name(bad, name):
    with pytest.raises(ValueError, match=name):
        bad()


def test_order_stats_ties_at_minus_inf_and_empty_batches():
    inf = float('inf')
    st_ = order_stats(torch.tensor([[2., 1., -inf, -inf]]), torch.tensor([[.7, .3, 0., 0.]]))
    assert st_['kendall_tau'] == 1.0 and st_['violation_rate'] == 0.0
    big = torch.randn(4, 20).index_fill(1, torch.tensor([5, 6]), -inf)          # the pairwise path (many tiers)
    w = torch.rand(4, 20)
    st_ = order_stats(big, w)
    assert -1 <= st_['kendall_tau'] <= 1
    assert all(np.isnan(v) for v in order_stats(torch.zeros(0, 4), torch.zeros(0, 4)).values())


def test_empty_batch_penalty_is_zero_with_zero_gradient():
    z = torch.zeros(0, 5, requires_grad=True)
    P = isotonic_penalty(z, torch.zeros(0, 5))
    P.backward()
    assert P.item() == 0.0 and z.grad.shape == (0, 5)


def test_masked_classes_on_the_device_solver(monkeypatch):
    "The masking with the device path's solver ('general', run here on the CPU): the same -inf, the same projection."
    import isokd.calibration as calibration
    g = torch.Generator().manual_seed(13)
    cases = []
    for C in (8, 100, 1000):
        t = make_targets('lam>0.5', 128, C, g).float()
        s = make_scores(t.double(), 'adversarial', g).float()
        s[torch.rand(128, C, generator=g) < 0.2] = -float('inf')
        cases.append((s, t, isotonic_calibrate(s, t)))
    solve = calibration._calibrate
    monkeypatch.setattr(calibration, '_calibrate', lambda t, w, path: solve(t, w, 'general'))
    for s, t, cpu in cases:
        q = isotonic_calibrate(s, t)
        assert torch.equal(q.isneginf(), cpu.isneginf())
        finite = ~q.isneginf()
        assert (q[finite] - cpu[finite]).abs().max() <= 1e-5 * s[s.isfinite()].abs().max()
