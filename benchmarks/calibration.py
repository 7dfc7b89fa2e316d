"""Speed of isotonic calibration, every method side by side in one run.

    python benchmarks/calibration.py                 # CPU (LD_PRELOAD=libtcmalloc_minimal.so.4 recommended)
    python benchmarks/calibration.py --device cuda   # CUDA, when there is one

Times (medians of many repeats, taken round-robin so that a busy machine slows every method alike) at 128 x 100 and
256 x 1000, float32 logits of a synthetic teacher on Mixup targets: `isotonic_calibrate`; the authors' pattern (a
Python loop over rows with per-element tensor indexing); scipy's PAV in a Python loop over rows; cvxpy (a few rows
timed, scaled to the batch); `isotonic_penalty`; and one `torch.sort` of the same tensor, the floor of any exact
solver that sorts. Prints a markdown table with every time's ratio to that sort.
"""
from __future__ import annotations
import argparse
import os
import platform
import statistics
import time
import warnings

import numpy as np
import torch
from scipy.optimize import isotonic_regression

from isokd.calibration import isotonic_calibrate, isotonic_penalty, _solve_general
from isokd.reference import isotonic_reference


def teacher_batch(B: int, C: int, seed: int = 0, sigma: float = 2.0, margin: float = 10.0, device='cpu'):
    """Mixup targets (`lam ~ U(0, 1)`, partner = a permutation of the batch, so about 1/B of the rows mix a class with
    itself) and the logits of a synthetic teacher: `sigma * N(0, 1) + margin * target`."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, C, (B,), generator=g)
    b, lam = a[torch.randperm(B, generator=g)], torch.rand(B, 1, generator=g)
    t = torch.zeros(B, C).scatter_(1, a[:, None], lam).scatter_add_(1, b[:, None], 1 - lam)
    z = sigma * torch.randn(B, C, generator=g) + margin * t
    return z.to(device), t.to(device)


def adversarial(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    "The same scores rearranged so that the labels get the teacher's weakest scores (every row pools far)."
    order = t.argsort(dim=1, descending=True, stable=True)
    return torch.empty_like(z).scatter_(1, order, z.sort(1).values)


def authors_loop(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The cost pattern of the authors' IR (distill/isotonic_regression.py): a Python loop over rows and, inside, one
    tensor element read or written per comparison and update. Two labels only (the target's top 2), and, like the
    original, not exact in every case (the same class, lam = 0.5): a cost baseline, not a solver."""
    soft = scores.detach().clone()
    top2 = target.topk(2, 1).indices
    lift = torch.zeros_like(soft)
    for r in range(len(soft)):                                   # offsets that sort the two labels first
        lift[r, top2[r, 0]] += 1e8
        lift[r, top2[r, 1]] += 1e4
    order = (soft + lift).sort(1, descending=True).indices
    C = soft.shape[1]
    for r in range(len(soft)):
        a, b = top2[r, 0], top2[r, 1]
        i, n_b, block_b = 2, 1.0, []
        while i < C and soft[r, order[r, i]] > soft[r, b]:       # pool b with the other classes above it
            soft[r, b] = (soft[r, b] * n_b + soft[r, order[r, i]]) / (n_b + 1)
            n_b += 1
            block_b.append(order[r, i])
            i += 1
        if soft[r, b] > soft[r, a]:                              # then a with that block, and more classes
            soft[r, a] = (soft[r, b] * n_b + soft[r, a]) / (n_b + 1)
            n_a, block_a = n_b + 1, block_b + [b]
            while i < C and soft[r, order[r, i]] > soft[r, a]:
                soft[r, a] = (soft[r, a] * n_a + soft[r, order[r, i]]) / (n_a + 1)
                n_a += 1
                block_a.append(order[r, i])
                i += 1
            for k in block_a:
                soft[r, k] = soft[r, a]
        else:
            for k in block_b:
                soft[r, k] = soft[r, b]
    return soft


def scipy_loop(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    "scipy's PAV on each row's chain (sorted by target, then score), in a Python loop over rows; float64."
    s, t = scores.detach().double().cpu().numpy(), target.detach().double().cpu().numpy()
    out = np.empty_like(s)
    for r in range(len(s)):
        o = np.lexsort((-s[r], -t[r]))
        out[r, o] = isotonic_regression(s[r, o], increasing=False).x
    return torch.from_numpy(out)


def penalty_fwd_bwd(z: torch.Tensor, t: torch.Tensor):
    z = z.detach().requires_grad_()
    isotonic_penalty(z, t).backward()
    return z.grad


def measure(methods: dict, sync) -> dict:
    "Median seconds per call of each method, timed round-robin: (fn, repeats, scale) -> median * scale."
    for fn, n, _ in methods.values():
        if n >= 5:
            fn()                                          # warm up (not the slow baselines: no JIT to warm)
    times = {k: [] for k in methods}
    for r in range(max(n for _, n, _ in methods.values())):
        for k, (fn, n, scale) in methods.items():
            if r >= n or times[k] is None:
                continue
            sync()
            t0 = time.perf_counter()
            try:
                fn()
            # a cvxpy solver that did not finish
            except RuntimeError:
                times[k] = None
                continue
            sync()
            times[k].append((time.perf_counter() - t0) * scale)
    return {k: statistics.median(v) if v else float('nan') for k, v in times.items()}


def fmt(sec: float) -> str:
    if sec != sec:
        return 'did not finish'
    return f"{sec * 1e3:.3g} ms" if sec >= 1e-3 else f"{sec * 1e6:.0f} us"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--repeats', type=float, default=1.0,
                    help='scale the number of repeats (e.g. 0.2 for a quick look)')
    ap.add_argument('--cvxpy-rows', type=int, default=4, help='rows solved by cvxpy, scaled to the batch')
    ap.add_argument('--pool', type=int, default=16, help='distinct batches cycled through')
    ap.add_argument('--threads', type=int, default=None, help="torch threads (default: torch's own default)")
    args = ap.parse_args(argv)
    warnings.filterwarnings('ignore', module='cvxpy')
    warnings.filterwarnings('ignore', message='isotonic_reference')
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == 'cuda' else (lambda: None)

    def rep(n):
        return max(1, int(n * args.repeats))

    sizes = [(128, 100, rep(400), rep(10), rep(30)), (256, 1000, rep(60), rep(3), rep(6))]
    for solver in ('CLARABEL', 'OSQP'):                          # import cvxpy and its solvers before any timing
        isotonic_reference(np.array([[0.0, 1.0, 2.0]]), np.array([[1.0, 0.0, 0.0]]), solver=solver)
    load0 = os.getloadavg()
    rows, results = [], {}
    for B, C, n_fast, n_loop, n_scipy in sizes:
        # A pool of distinct batches, cycled through call by call: sorting the very same data again and again lets the
        # CPU's branch predictor learn it (a 128 x 100 sort then takes 0.1 ms instead of 0.5 ms), which no training
        # step sees.
        pool = [teacher_batch(B, C, seed=i, device=dev) for i in range(args.pool)]
        pool_a = [(adversarial(z, t), t) for z, t in pool]
        k = min(args.cvxpy_rows, B)
        def cyc(fn, data=pool):
            it = iter(range(10**9))
            return lambda: fn(*data[next(it) % len(data)])
        m = {
            'isotonic_calibrate': (cyc(isotonic_calibrate), n_fast, 1),
            'isotonic_calibrate, labels weakest (every row falls back to a sort)':
                (cyc(isotonic_calibrate, pool_a), n_fast, 1),
            'general path (what CUDA runs), on this device': (cyc(_solve_general), rep(n_fast // 4), 1),
            "authors' pattern: row loop, per-element indexing": (cyc(authors_loop), n_loop, 1),
            'isotonic_penalty, forward': (cyc(isotonic_penalty), n_fast, 1),
            'isotonic_penalty, forward + backward': (cyc(penalty_fwd_bwd), n_fast, 1),
            'torch.sort of the same tensor': (cyc(lambda z, t: torch.sort(z, 1, descending=True)), n_fast, 1),
        }
        if dev.type == 'cpu':
            m['scipy PAV, row loop (float64)'] = (cyc(scipy_loop), n_scipy, 1)
            for solver, what in (('CLARABEL', 'CLARABEL'), ('auto', 'OSQP polished (CLARABEL where it fails)')):
                m[f'cvxpy {what}, one QP per row (timed on {k} rows, scaled)'] = (
                    cyc(lambda z, t, solver=solver: isotonic_reference(z[:k], t[:k], solver=solver)), rep(2), B / k)
        results[(B, C)] = measure(m, sync)
        rows = list(m)
    load1 = os.getloadavg()
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {dev.type} ({name}), {torch.get_num_threads()} threads, "
          f"load average {load0[0]:.1f} at start, {load1[0]:.1f} at end; medians, float32\n")
    hdr = ' | '.join(f'{B} x {C} | vs sort' for B, C in results)
    print(f"| method | {hdr} |\n|---|" + '---:|---:|' * len(results))
    for r in rows:
        cells = []
        for res in results.values():
            v, s = res[r], res['torch.sort of the same tensor']
            cells += [fmt(v), f"{v / s:.2f}x" if v == v else '']
        print(f"| {r} | " + ' | '.join(cells) + ' |')


if __name__ == '__main__':
    main()
