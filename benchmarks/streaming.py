"""The streaming input path on generated JPEG folders: loader throughput, the step with and without it, and memory.

    python benchmarks/streaming.py                 # all three parts, on this CPU
    python benchmarks/streaming.py --parts memory  # one part: throughput, step or memory

- throughput: images/s of `FolderData.loader('train', ...)` (decode, RandomResizedCrop 224, flip, collate; what a run
  iterates) over a folder of ImageNet-sized JPEGs (500 x 375), with 0 workers (the main process alone), 1 and 2; the
  figure per worker count is the median of its passes, and per worker it is divided by the workers (0: one process).
  Beside it, the in-memory path on the same images: `ImageData.loader('train', ...)`, a `DeviceLoader` of the images
  held as uint8 224 x 224 tensors (random crop from a padding of 28, flip, normalisation, here on the CPU).
- step: the KD-i training step (`isokd.loop.train_step`, as `train_epoch` runs it) of ResNet-34 -> ResNet-18
  (torchvision's ImageNet form) on a batch already in memory, and the same step fed by the streaming loader from the
  folder, in interleaved blocks; milliseconds per step (medians over blocks) and their ratio.
- memory: peak resident memory of a whole KD-i run (`isokd.runs.distill`, one epoch, resnet8 <- resnet8) on a
  generated folder of 1,000 and of 10,000 JPEGs of 64 x 64, each in a fresh process: streamed (every image of the
  folder, crops of 32), and held in memory (`register_image_folder(stream=False)`; the folder is read whole, one epoch
  on 1,000 of its images): the main process and its largest loader process.
"""
import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image


def jpeg_folder(root: Path, n: int, size=(500, 375), classes: int = 10, val_fraction: float = 0.1) -> Path:
    "A generated ImageNet-style folder: `n` training JPEGs of `size` in `classes` classes, and a tenth as many in val."
    g = torch.Generator().manual_seed(0)
    # a smooth random image per class, noise per image: JPEGs of ordinary compressibility
    base = torch.nn.functional.interpolate(torch.rand(classes, 3, 8, 8, generator=g), size=size[::-1], mode='bilinear')
    for split, count in (('train', n), ('val', max(classes, round(n * val_fraction)))):
        for k in range(count):
            c = k % classes
            (root/split/f'n{c:08d}').mkdir(parents=True, exist_ok=True)
            pixels = (base[c] * 200 + 55 * torch.rand(3, *size[::-1], generator=g)).clamp(0, 255).to(torch.uint8)
            Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(root/split/f'n{c:08d}'/f'{k}.JPEG', quality=85)
    return root


def images_per_s(loader, passes: int) -> tuple[float, int]:
    "The median images/s of `passes` epochs over `loader`, and the images of one epoch."
    rates = []
    for epoch in range(passes):
        loader.set_epoch(epoch)
        start = time.perf_counter()
        n = sum(len(labels) for _, labels, _ in loader)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates), n


def throughput(root: Path, passes: int, batch_size: int) -> dict:
    from isokd.data import register_image_folder
    data = register_image_folder('bench-throughput', root, stream=True)
    figures = {}
    for workers in (0, 1, 2):
        rate, n = images_per_s(data.loader('train', batch_size, 'cpu', train=True, workers=workers), passes)
        figures[workers] = dict(images_per_s=rate, per_worker=rate / max(1, workers))
        print(f"  workers {workers}: {rate:7.1f} images/s, {rate / max(1, workers):7.1f} per worker "
              f"(median of {passes} passes over {n} images)", flush=True)
    in_memory = register_image_folder('bench-in-memory', root, stream=False, size=224)
    rate, n = images_per_s(in_memory.loader('train', batch_size, 'cpu', train=True), passes)
    figures['in memory'] = dict(images_per_s=rate)
    print(f"  in memory (DeviceLoader, on this CPU): {rate:7.1f} images/s "
          f"(median of {passes} passes over {n} images)", flush=True)
    return figures


def step(root: Path, size: int, batch_size: int, blocks: int, block: int, workers: int) -> dict:
    from isokd.config import KDConfig
    from isokd.data import register_image_folder
    from isokd.loop import make_optimizer, prepare, train_step
    from isokd.mixing import Mixer
    from isokd.models import create_model
    data = register_image_folder('bench-step', root, stream=True, size=size)
    torch.manual_seed(0)
    student, teacher = (create_model(arch, data.num_classes) for arch in ('resnet18_imagenet', 'resnet34_imagenet'))
    cfg = KDConfig(dataset='bench-step', arch='resnet18_imagenet', teacher_arch='resnet34_imagenet', mixup='cutmix',
                   calibration='isotonic', epochs=1000, device='cpu')
    distiller = prepare(cfg.build(student, teacher, data.y_train), torch.device('cpu'))
    opt, sched = make_optimizer([p for p in distiller.parameters() if p.requires_grad], cfg, 1000)
    mixer = Mixer('cutmix', data.num_classes)
    loader = data.loader('train', batch_size, 'cpu', train=True, channels_last=True, workers=workers)
    in_memory = next(iter(loader))

    def streamed_batches():
        epoch = 0
        while True:
            loader.set_epoch(epoch)
            yield from loader
            epoch += 1

    stream = streamed_batches()
    # the first steps build the kernels: not timed
    for _ in range(2):
        train_step(distiller, in_memory, mixer, opt, sched)
    times = {'in memory': [], 'streamed': []}
    for _ in range(blocks):
        for name in times:
            start = time.perf_counter()
            for _ in range(block):
                train_step(distiller, in_memory if name == 'in memory' else next(stream), mixer, opt, sched)
            times[name].append((time.perf_counter() - start) * 1000 / block)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"  {batch_size} images of {size} x {size}, {workers} worker(s): in memory {medians['in memory']:.0f} ms, "
          f"streamed {medians['streamed']:.0f} ms per step, ratio {medians['streamed'] / medians['in memory']:.2f} "
          f"(medians of {blocks} blocks of {block} steps)", flush=True)
    return medians


def memory_run(path: str, root: Path, out: Path) -> None:
    "One run in this process (the `--memory-run` mode); prints its peak resident memory as JSON."
    from isokd.data import register_image_folder
    from isokd.models import create_model
    from isokd.runs import distill
    torch.manual_seed(0)
    torch.save(create_model('resnet8', 10).state_dict(), out/'teacher.pt')
    stream = path == 'streamed'
    register_image_folder('bench-memory', root, stream=stream, size=32 if stream else None)
    distill(dataset='bench-memory', arch='resnet8', teacher_arch='resnet8', teacher_path=str(out/'teacher.pt'),
            epochs=1, batch_size=128, n_train=None if stream else 1000, n_val=0, mixup='cutmix',
            calibration='isotonic', device='cpu', bf16=False, workers=1 if stream else None,
            out_dir=str(out/'run'), progress=False)
    kib = {who: resource.getrusage(w).ru_maxrss for who, w in (('main', resource.RUSAGE_SELF),
                                                               ('worker', resource.RUSAGE_CHILDREN))}
    print(json.dumps({who: k / 1024 for who, k in kib.items()}))


def memory(sizes: list[int], scratch: Path) -> dict:
    figures = {}
    for n in sizes:
        root = jpeg_folder(scratch/f'folder{n}', n, size=(64, 64))
        for path in ('streamed', 'in memory'):
            out = Path(tempfile.mkdtemp(dir=scratch))
            r = subprocess.run([sys.executable, __file__, '--memory-run', path, str(root), str(out)],
                               capture_output=True, text=True)
            if r.returncode:
                sys.exit(r.stderr[-3000:])
            peak = json.loads(r.stdout.strip().splitlines()[-1])
            figures[f'{path} {n}'] = peak
            print(f"  {n:>6} JPEGs, {path:<9}: peak resident {peak['main']:6.0f} MB main process, "
                  f"{peak['worker']:6.0f} MB largest loader process", flush=True)
    return figures


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--parts', default='throughput,step,memory')
    p.add_argument('--images', type=int, default=256, help='JPEGs of the throughput and step folder')
    p.add_argument('--passes', type=int, default=3, help='passes over the folder per worker count')
    p.add_argument('--size', type=int, default=112, help="the step's crop (224: ImageNet's; slow on a CPU)")
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--blocks', type=int, default=3)
    p.add_argument('--block', type=int, default=3, help='steps per block')
    p.add_argument('--workers', type=int, default=1, help="loader processes of the step's streamed batches")
    p.add_argument('--memory-sizes', default='1000,10000')
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--memory-run', nargs=3, metavar=('PATH', 'ROOT', 'OUT'), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.memory_run:
        return memory_run(a.memory_run[0], Path(a.memory_run[1]), Path(a.memory_run[2]))
    if a.threads:
        torch.set_num_threads(a.threads)
    parts = a.parts.split(',')
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        if {'throughput', 'step'} & set(parts):
            folder = jpeg_folder(scratch/'imagenet-like', a.images)
        if 'throughput' in parts:
            print(f"throughput ({a.images} JPEGs of 500 x 375, RandomResizedCrop 224 and flip):", flush=True)
            throughput(folder, a.passes, a.batch_size)
        if 'step' in parts:
            print("step (KD-i, CutMix, ResNet-34 -> ResNet-18, torchvision's ImageNet form, float32):", flush=True)
            step(folder, a.size, a.batch_size, a.blocks, a.block, a.workers)
        if 'memory' in parts:
            print("memory (one epoch of KD-i, resnet8 <- resnet8):", flush=True)
            memory([int(n) for n in a.memory_sizes.split(',')], scratch)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)


if __name__ == '__main__':
    main()
