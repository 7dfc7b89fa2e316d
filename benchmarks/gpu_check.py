"""The first command on a GPU: its CUDA tests, the paper's training step, calibration, and two paper-shaped epochs.

    python benchmarks/gpu_check.py OUT_DIR            # one GPU, at most about 8 minutes
    python benchmarks/gpu_check.py OUT_DIR --small    # the same steps, shrunk to seconds (on the CPU: what CI runs)

Writes OUT_DIR/gpu_check.json with every figure and the device's name, and prints them:
1. the CUDA tests (`tests/test_gpu_path.py`, `tests/test_calibration.py -k cuda`): passed, failed, skipped;
2. `benchmarks/train_step.py` at the paper's shapes (ResNet-50 -> ResNet-18, 100 classes, batch 128, bf16), with
   `torch.compile` off and on: KD-aug, KD-i and KD-p milliseconds per step and their ratios;
3. `isotonic_calibrate` on the device against one `torch.sort` of the same tensor (128 x 100 and 256 x 1000);
4. two epochs of a KD-i run (`isokd.runs.distill`) on synthetic CIFAR-100-shaped data (50,000 images of 3 x 32 x 32,
   100 classes) from a ResNet-50 teacher of random weights: seconds per epoch and images per second.
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

from isokd.calibration import isotonic_calibrate
from isokd.core import atomic_write_json, get_device, project_root, versions
from isokd.data import register_dataset
from isokd.models import create_model
from isokd.runs import distill
# the sibling benchmarks: their synthetic teacher batch and their timer
from calibration import teacher_batch
from train_step import timed

ROOT = project_root()
PAPER = dict(teacher='resnet50', student='resnet18', classes=100, batch=128, images=50_000, blocks=12, block=5)
SMALL = dict(teacher='resnet8', student='resnet8', classes=10, batch=32, images=1024, blocks=2, block=2)

def cuda_tests(out: Path) -> dict:
    "Run the CUDA tests in a subprocess; return their counts from pytest's junit report."
    report = out/'cuda_tests.xml'
    cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', f'--junitxml={report}',
           'tests/test_gpu_path.py', 'tests/test_calibration.py', '-k', 'cuda']
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    suite = ET.parse(report).getroot()
    suite = suite if suite.tag == 'testsuite' else suite.find('testsuite')
    counts = {k: int(suite.get(k, 0)) for k in ('tests', 'failures', 'errors', 'skipped')}
    return counts | dict(returncode=done.returncode, tail=done.stdout[-2000:])

def step_benchmark(shape: dict, compile: bool, small: bool) -> dict:
    "`benchmarks/train_step.py --json` at `shape`; its last line, parsed."
    cmd = [sys.executable, str(ROOT/'benchmarks'/'train_step.py'), '--json', '--teacher-arch', shape['teacher'],
           '--arch', shape['student'], '--classes', str(shape['classes']), '--batch-size', str(shape['batch']),
           '--blocks', str(shape['blocks']), '--block', str(shape['block']), '--bf16', 'off' if small else 'on']
    done = subprocess.run(cmd + (['--compile'] if compile else []), cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    if done.returncode:
        return dict(error=done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])

def _ms(fn, device, repeats: int = 20, rounds: int = 5) -> float:
    "Median milliseconds of `fn` over `rounds` rounds of `repeats` calls."
    return statistics.median(timed(fn, device, repeats) for _ in range(rounds))

def calibration_benchmark(device) -> dict:
    "`isotonic_calibrate` of `benchmarks/calibration.py`'s Mixup batches against one `torch.sort` of the same scores."
    result = {}
    for batch, classes in ((128, 100), (256, 1000)):
        scores, target = teacher_batch(batch, classes, device=device)
        isotonic_calibrate(scores, target)
        calibrate, sort = _ms(lambda: isotonic_calibrate(scores, target), device), _ms(lambda: scores.sort(1), device)
        result[f'{batch}x{classes}'] = dict(calibrate_ms=calibrate, sort_ms=sort, ratio=calibrate / sort)
    return result

def two_epochs(shape: dict, device, folder: Path) -> dict:
    "Two KD-i epochs on random CIFAR-shaped images from a random-weight teacher; seconds and images/s per epoch."
    g = torch.Generator().manual_seed(0)
    n, test = shape['images'], max(256, shape['images'] // 5)
    train = (torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8),
             torch.randint(0, shape['classes'], (n,), generator=g))
    held = (torch.randint(0, 256, (test, 3, 32, 32), generator=g, dtype=torch.uint8),
            torch.randint(0, shape['classes'], (test,), generator=g))
    train[1][:shape['classes']] = torch.arange(shape['classes'])
    register_dataset('paper_shaped', train=train, test=held, num_classes=shape['classes'])
    teacher = create_model(shape['teacher'], shape['classes'])
    torch.save(teacher.state_dict(), folder/'teacher.pt')
    metrics = distill(dataset='paper_shaped', arch=shape['student'], teacher_arch=shape['teacher'], epochs=2,
                      batch_size=shape['batch'], calibration='isotonic', teacher_path=str(folder/'teacher.pt'),
                      device=str(device), out_dir=str(folder/'kd-i'), progress=False)
    return dict(seconds_per_epoch=[r['seconds'] for r in metrics['history']],
                images_per_s=[r['images_per_s'] for r in metrics['history']], images=n)

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('out', type=Path, help='the folder for gpu_check.json')
    p.add_argument('--small', action='store_true', help='tiny shapes: seconds, on any device (the CI test)')
    a = p.parse_args()
    device = get_device('auto')
    # the paper-shaped check is for a GPU: without one it would spend minutes measuring the CPU
    if device.type != 'cuda' and not a.small:
        sys.exit("gpu_check: no CUDA GPU here (torch.cuda.is_available() is False); run it on a machine with a GPU, "
                 "or pass --small for the tiny shapes on this CPU")
    a.out.mkdir(parents=True, exist_ok=True)
    shape = SMALL if a.small else PAPER
    start = time.perf_counter()
    report = dict(device=versions(device), small=a.small, shape=shape)
    report['cuda_tests'] = cuda_tests(a.out)
    compiles = (False,) if a.small else (False, True)
    report['train_step'] = {f'compile_{c}': step_benchmark(shape, c, a.small) for c in compiles}
    report['calibration'] = calibration_benchmark(device)
    with tempfile.TemporaryDirectory() as folder:
        report['two_epochs'] = two_epochs(shape, device, Path(folder))
    report['seconds'] = time.perf_counter() - start
    atomic_write_json(a.out/'gpu_check.json', report)
    tests = report['cuda_tests']
    print(f"{report['device']['device_name']} ({report['device']['device']}), torch {report['device']['torch']}")
    print(f"CUDA tests: {tests['tests']} run, {tests['failures'] + tests['errors']} failed, {tests['skipped']} skipped")
    for name, step in report['train_step'].items():
        if 'error' in step:
            print(f"train step, {name}: failed: {step['error'][-300:]}")
            continue
        print(f"train step, {name}: KD-aug {step['kd_aug_ms']:.2f} ms, KD-i {step['kd_i_ratio']:.3f}x, "
              f"KD-p {step['kd_p_ratio']:.3f}x")
    for size, c in report['calibration'].items():
        print(f"calibration {size}: {c['calibrate_ms']:.3f} ms, one sort {c['sort_ms']:.3f} ms ({c['ratio']:.2f}x)")
    epochs = report['two_epochs']
    seconds = ', '.join(f'{s:.1f}' for s in epochs['seconds_per_epoch'])
    rates = ', '.join(f'{r:.0f}' for r in epochs['images_per_s'])
    print(f"two KD-i epochs of {epochs['images']} images: {seconds} s, {rates} images/s")
    print(f"{a.out/'gpu_check.json'} ({report['seconds']:.0f} s)")

if __name__ == '__main__':
    main()
