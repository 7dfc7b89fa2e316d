"""KD-i and KD-p's loss step, eager against `torch.compile(fullgraph=True)`, on the CPU (or CUDA with --device cuda).

    python benchmarks/compile_loss.py                # one thread; B = 128 rows of C = 10 and C = 100 classes

Times the step a training loop runs on the logits, `isokd.functional.kd_i_loss` / `kd_p_loss` forward and its
backward to the student's logits, on a two-way Mixup target, in interleaved blocks (medians), and the seconds each
compilation took (the first call). Prints the CPU and torch's version.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from isokd.core import cpu_model
from isokd.functional import kd_i_loss, kd_p_loss

def mixup_batch(B: int, C: int, device: str, seed: int = 0):
    "Student and teacher logits and a two-way Mixup target."
    g = torch.Generator().manual_seed(seed)
    z, t = torch.randn(B, C, generator=g), torch.randn(B, C, generator=g) * 3
    lam = torch.rand(B, 1, generator=g)
    a, b = torch.randint(0, C, (B,), generator=g), torch.randint(0, C, (B,), generator=g)
    w = lam * F.one_hot(a, C) + (1 - lam) * F.one_hot(b, C)
    return z.to(device).requires_grad_(), t.to(device), w.to(device)

def step(loss, z, t, w):
    "Forward and backward to the student's logits."
    torch.autograd.grad(loss(z, t, w), z)

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--device', default='cpu')
    p.add_argument('--blocks', type=int, default=9)
    p.add_argument('--block', type=int, default=50)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    sync = torch.cuda.synchronize if a.device == 'cuda' else (lambda: None)
    where = torch.cuda.get_device_name() if a.device == 'cuda' else f"{cpu_model()}, {a.threads} thread(s)"
    print(f"{where}; torch {torch.__version__}")
    print(f"{'loss':6} {'B x C':>9} {'compile s':>10} {'eager ms':>9} {'compiled ms':>12} {'compiled/eager':>15}")
    for C in (10, 100):
        data = mixup_batch(128, C, a.device)
        for name, loss in (('KD-i', kd_i_loss), ('KD-p', kd_p_loss)):
            torch._dynamo.reset()
            compiled = torch.compile(loss, fullgraph=True)
            t0 = time.perf_counter()
            step(compiled, *data)
            sync()
            compile_s = time.perf_counter() - t0
            times = {'eager': [], 'compiled': []}
            for _ in range(a.blocks):
                for kind, fn in (('eager', loss), ('compiled', compiled)):
                    t0 = time.perf_counter()
                    for _ in range(a.block):
                        step(fn, *data)
                    sync()
                    times[kind].append((time.perf_counter() - t0) * 1000 / a.block)
            eager, comp = statistics.median(times['eager']), statistics.median(times['compiled'])
            print(f"{name:6} {f'128 x {C}':>9} {compile_s:10.1f} {eager:9.3f} {comp:12.3f} {comp / eager:15.2f}")

if __name__ == '__main__':
    main()
