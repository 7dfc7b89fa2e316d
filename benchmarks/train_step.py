"""Cost of a training step: KD-aug, KD-i and KD-p with the same models, batch and mixing, and the share of calibration.

    python benchmarks/train_step.py                                   # this CPU: resnet14 -> resnet8, 10 classes
    # the paper's step, on a GPU:
    python benchmarks/train_step.py --teacher-arch resnet50 --arch resnet18 --classes 100 --compile
    python benchmarks/train_step.py --json                            # ... and one JSON object on the last line

The three methods run what `isokd.loop.train_epoch` runs per step: the shipped step, `isokd.loop.train_step` (mix,
teacher under inference_mode, calibration, losses, the teacher's order statistics of the batch that the distiller
counts (`TeacherOrder.update`, which reuses KD-i's IR(t)), backward, SGD step, schedule), on distillers placed by
`isokd.loop.prepare` and built from `KDConfig` as the runs build them, on batches already on the device, in interleaved
blocks so that drift of the machine affects them alike; the figure per method is the median over blocks. Calibration
alone (`isotonic_calibrate` for KD-i, `isotonic_penalty` forward and backward for KD-p) and the order statistics alone
are timed on the same logits, and their shares are given against the step.
"""
import argparse
import copy
import json
import statistics
import time

import torch

from isokd.calibration import isotonic_calibrate, isotonic_penalty
from isokd.order import TeacherOrder
from isokd.config import KDConfig
from isokd.core import choose_precision, get_device, versions
from isokd.loop import make_optimizer, prepare, train_step
from isokd.mixing import Mixer
from isokd.models import create_model

METHODS = {'kd_aug': 'none', 'kd_i': 'isotonic', 'kd_p': 'isotonic_appr'}

def sync(dev):
    if dev.type == 'cuda':
        torch.cuda.synchronize(dev)

def timed(fn, dev, n: int) -> float:
    "Milliseconds per call of `fn`, over `n` calls."
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    sync(dev)
    return (time.perf_counter() - t0) * 1000 / n

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='auto')
    p.add_argument('--arch', default='resnet8')
    p.add_argument('--teacher-arch', default='resnet14')
    p.add_argument('--classes', type=int, default=10)
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--mixup', default='mixup', choices=['mixup', 'cutmix'])
    p.add_argument('--in-channels', type=int, default=3, help='image channels (Fashion-MNIST at its native size: 1)')
    p.add_argument('--size', type=int, default=32, help='image side (Fashion-MNIST at its native size: 28)')
    p.add_argument('--blocks', type=int, default=12, help='timed blocks per method')
    p.add_argument('--block', type=int, default=5, help='steps per block')
    p.add_argument('--bf16', choices=['auto', 'on', 'off'], default='auto',
                   help="bf16 autocast (auto: where native, as a run's bf16=None)")
    p.add_argument('--compile', action='store_true', help='torch.compile student and teacher')
    p.add_argument('--no-channels-last', dest='channels_last', action='store_false')
    p.add_argument('--threads', type=int, default=None, help='CPU threads (default: torch default)')
    p.add_argument('--json', action='store_true', help='print one JSON object on the last line')
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = get_device(a.device)
    bf16 = choose_precision(None if a.bf16 == 'auto' else a.bf16 == 'on', dev).bf16
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    torch.manual_seed(0)
    student = create_model(a.arch, a.classes, a.in_channels)
    teacher = create_model(a.teacher_arch, a.classes, a.in_channels)
    runs = {}
    # the same initial student for each method
    for name, cal in METHODS.items():
        cfg = KDConfig(dataset='synthetic', calibration=cal, mixup=a.mixup, epochs=1000, device=str(dev))
        distiller = prepare(cfg.build(copy.deepcopy(student), teacher, None), dev, a.channels_last, a.compile)
        opt, sched = make_optimizer([p for p in distiller.parameters() if p.requires_grad], cfg, 1000)
        runs[name] = (distiller, opt, sched)
    mixer = Mixer(a.mixup, a.classes)
    x = torch.randn(a.batch_size, a.in_channels, a.size, a.size, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, a.classes, (a.batch_size,), device=dev)
    index = torch.arange(a.batch_size, device=dev)

    def step(name):
        distiller, opt, sched = runs[name]
        distiller.train()
        # the distiller counts the teacher's order inside its step, as in a run
        train_step(distiller, (x, y, index), mixer, opt, sched, bf16)

    for name in runs:                                       # warm-up (and compilation)
        for _ in range(3 if not a.compile else 10):
            step(name)
    ms = {name: [] for name in runs}
    for _ in range(a.blocks):
        for name in runs:
            ms[name].append(timed(lambda: step(name), dev, a.block))
    med = {name: statistics.median(v) for name, v in ms.items()}

    xm, target = mixer(x, y)
    t = runs['kd_i'][0].teacher_logits(xm)
    z = torch.randn_like(t, requires_grad=True)
    calib = {'kd_i': statistics.median(timed(lambda: isotonic_calibrate(t, target), dev, 20) for _ in range(5)),
             'kd_p': statistics.median(timed(lambda: isotonic_penalty(z, target).backward(), dev, 20)
                                       for _ in range(5))}
    statistics_ms = statistics.median(timed(lambda: TeacherOrder().update(t, target), dev, 20) for _ in range(5))

    info = versions(dev)
    print(f"device {info['device']} ({info['device_name']}), torch {info['torch']}, threads {info['threads']}, "
          f"{a.teacher_arch} -> {a.arch}, {a.classes} classes, batch {a.batch_size}, {a.mixup}, bf16 {bf16}, "
          f"compile {a.compile}, channels_last {a.channels_last}; median of {a.blocks} blocks of {a.block} steps")
    print(f"order statistics (every step; KD-i's reuse its IR(t)): {statistics_ms:.3f} ms, "
          f"{statistics_ms / med['kd_aug']:.1%} of a KD-aug step")
    print(f"{'method':<8} {'ms/step':>9} {'images/s':>9} {'vs KD-aug':>9} {'calibration':>12} {'share':>6}")
    for name in runs:
        c = calib.get(name)
        print(f"{name:<8} {med[name]:9.2f} {a.batch_size / med[name] * 1000:9.0f} {med[name] / med['kd_aug']:9.3f}"
              + (f" {c:9.3f} ms {c / med[name]:6.1%}" if c is not None else ''))
    if a.json:
        print(json.dumps(dict(kd_aug_ms=med['kd_aug'], kd_i_ms=med['kd_i'], kd_p_ms=med['kd_p'], device=info['device'],
                              device_name=info['device_name'], kd_i_ratio=med['kd_i'] / med['kd_aug'],
                              kd_p_ratio=med['kd_p'] / med['kd_aug'], calibration_ms=calib, statistics_ms=statistics_ms,
                              images_per_s={k: a.batch_size / v * 1000 for k, v in med.items()},
                              params=vars(a) | dict(bf16=bf16), torch=info['torch'], threads=info['threads'])))

if __name__ == '__main__':
    main()
