"""Cost of a training step on the fashion-pairs images in each layout, against the cpu study's Fashion-MNIST step.

    python benchmarks/pairs_layout.py                  # KD-aug, Mixup: resnet14 forward -> resnet8 step, batch 128
    python benchmarks/pairs_layout.py --calibration isotonic --json

Three inputs, timed in interleaved blocks (so that drift of the machine, or a neighbour's load, affects them alike) and
reported as the median over blocks:

- `baseline`: today's cpu study, 1 x 28 x 28, 10 classes;
- `channels`: a pair as the two channels of one image, 2 x 28 x 28, 100 classes (the layout `fashion-pairs` uses);
- `side`: a pair side by side, 1 x 28 x 56, 100 classes.

Each runs the shipped step, `isokd.loop.train_step` (mix, teacher forward under inference_mode, the losses, backward,
SGD step, schedule), on a distiller built from `KDConfig` and placed by `isokd.loop.prepare` as the runs build them,
float32 on one thread unless told otherwise. The ratio column is the median step's time over the baseline's (with the
same number of optimizer steps per run, docs/pairs.md, the ratio of the runs' training time); beside it, the lowest and
highest ratio of a block to the baseline's block just before it.
"""
import argparse
import copy
import json
import statistics
import time

import torch

from isokd.config import KDConfig
from isokd.core import cpu_model, versions
from isokd.loop import make_optimizer, prepare, train_step
from isokd.mixing import Mixer
from isokd.models import create_model

# name: (channels, height, width, classes)
LAYOUTS = {'baseline': (1, 28, 28, 10), 'channels': (2, 28, 28, 100), 'side': (1, 28, 56, 100)}

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--arch', default='resnet8')
    p.add_argument('--teacher-arch', default='resnet14')
    p.add_argument('--batch-size', type=int, default=128)
    p.add_argument('--mixup', default='mixup', choices=['mixup', 'cutmix'])
    p.add_argument('--calibration', default='none', help="the runs' calibration: 'none' (KD-aug), 'isotonic' (KD-i)...")
    p.add_argument('--blocks', type=int, default=9, help='timed blocks per layout')
    p.add_argument('--block', type=int, default=4, help='steps per block')
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--bf16', action='store_true', help='bf16 autocast (default float32)')
    p.add_argument('--json', action='store_true', help='print one JSON object on the last line')
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    dev = torch.device('cpu')
    torch.manual_seed(0)
    steps = {}
    for name, (c, h, w, classes) in LAYOUTS.items():
        student = create_model(a.arch, classes, c)
        teacher = create_model(a.teacher_arch, classes, c).eval()
        cfg = KDConfig(dataset='synthetic', calibration=a.calibration, mixup=a.mixup, epochs=1000, device='cpu')
        distiller = prepare(cfg.build(copy.deepcopy(student), teacher, None), dev, True)
        opt, sched = make_optimizer([q for q in distiller.parameters() if q.requires_grad], cfg, 1000)
        x = torch.randn(a.batch_size, c, h, w).contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, classes, (a.batch_size,))
        batch = (x, y, torch.arange(a.batch_size))
        mixer = Mixer(a.mixup, classes)

        def step(distiller=distiller, batch=batch, mixer=mixer, opt=opt, sched=sched):
            distiller.train()
            train_step(distiller, batch, mixer, opt, sched, a.bf16)
        steps[name] = step

    for step in steps.values():                            # warm-up
        for _ in range(3):
            step()
    ms = {name: [] for name in steps}
    for _ in range(a.blocks):
        for name, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(a.block):
                step()
            ms[name].append((time.perf_counter() - t0) * 1000 / a.block)
    med = {name: statistics.median(v) for name, v in ms.items()}
    # each block's time over the baseline's block just before it: the spread says how much the load moved
    ratios = {name: sorted(t / b for t, b in zip(v, ms['baseline'])) for name, v in ms.items()}

    info = versions(dev)
    print(f"CPU {cpu_model()}, torch {info['torch']}, {a.threads} thread(s), "
          f"{a.teacher_arch} forward -> {a.arch} step, "
          f"batch {a.batch_size}, {a.mixup}, calibration {a.calibration!r}, {'bf16' if a.bf16 else 'float32'}, "
          f"channels_last; median of {a.blocks} interleaved blocks of {a.block} steps")
    print(f"{'layout':<9} {'input':>10} {'classes':>7} {'ms/step':>8} {'images/s':>8} {'vs baseline':>11} "
          f"{'per block (min-max)':>20}")
    for name, (c, h, w, classes) in LAYOUTS.items():
        print(f"{name:<9} {f'{c}x{h}x{w}':>10} {classes:7d} {med[name]:8.1f} {a.batch_size / med[name] * 1000:8.0f} "
              f"{med[name] / med['baseline']:11.2f} {f'{ratios[name][0]:.2f}-{ratios[name][-1]:.2f}':>20}")
    if a.json:
        print(json.dumps(dict(cpu=cpu_model(), torch=info['torch'], params=vars(a), ms=med,
                              ratio={k: v / med['baseline'] for k, v in med.items()}, block_ratios=ratios)))

if __name__ == '__main__':
    main()
