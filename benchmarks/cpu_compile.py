"""torch.compile and oneDNN fusion for the cpu scale's small models, against eager: is either worth having?

    python benchmarks/cpu_compile.py                 # one thread, float32, resnet14 teacher and resnet8 student

Times, in interleaved blocks (medians), the teacher's forward under inference_mode (eager; `torch.compile`; TorchScript
frozen and `optimize_for_inference`, which folds batch norm into the convolutions and fuses ReLU in oneDNN) and the
student's training step (forward, backward, SGD; eager and `torch.compile`) at the cpu scale's shapes (batch 128,
1 x 28 x 28, channels_last), and the seconds each compilation took. Prints the CPU and the precision.
"""
import argparse
import statistics
import time

import torch

from isokd.core import cpu_model
from isokd.models import create_model

def median_ms(fn, blocks: int, block: int) -> list[float]:
    "Milliseconds per call of `fn`, one figure per block."
    out = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(block):
            fn()
        out.append((time.perf_counter() - t0) * 1000 / block)
    return out

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--blocks', type=int, default=8)
    p.add_argument('--block', type=int, default=3)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.randn(128, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    teacher = create_model('resnet14', 10, 1).eval().to(memory_format=torch.channels_last)
    student = create_model('resnet8', 10, 1).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    compiled_student = torch.compile(student)
    compile_s = {}
    with torch.inference_mode():
        t0 = time.perf_counter()
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(teacher, x)))
        frozen(x)
        compile_s['teacher, TorchScript frozen'] = time.perf_counter() - t0
        compiled_teacher = torch.compile(teacher)
        t0 = time.perf_counter()
        compiled_teacher(x)
        compile_s['teacher, torch.compile'] = time.perf_counter() - t0

    def step(model):
        loss = model(x).logsumexp(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step(compiled_student)
    compile_s['student step, torch.compile'] = time.perf_counter() - t0

    def teacher_of(model):
        def forward():
            with torch.inference_mode():
                model(x)
        return forward

    cases = {'teacher forward, eager': teacher_of(teacher),
             'teacher forward, torch.compile': teacher_of(compiled_teacher),
             'teacher forward, TorchScript frozen': teacher_of(frozen),
             'student step, eager': lambda: step(student),
             'student step, torch.compile': lambda: step(compiled_student)}
    for fn in cases.values():
        fn()
    times = {name: [] for name in cases}
    for _ in range(a.blocks):
        for name, fn in cases.items():
            times[name] += median_ms(fn, 1, a.block)
    med = {name: statistics.median(v) for name, v in times.items()}
    print(f"CPU {cpu_model()}, torch {torch.__version__}, {a.threads} thread(s), float32, batch 128, 1 x 28 x 28, "
          f"channels_last; median of {a.blocks} interleaved blocks of {a.block}")
    for name, ms in med.items():
        base = med[name.split(',')[0] + ', eager']
        print(f"{name:<38} {ms:8.1f} ms  {base / ms:5.2f}x eager")
    for name, s in compile_s.items():
        print(f"compile: {name:<30} {s:6.1f} s")

if __name__ == '__main__':
    main()
