"""Threads for one run on a machine that something else also uses: 1 against all cores, with and without a neighbour.

    python benchmarks/threads.py            # KD-aug steps of the cpu scale (resnet14 -> resnet8, 1 x 28 x 28)

Times `benchmarks/train_step.py` (the shipped training step, float32) in a fresh process for each thread count, first on
a quiet machine, then beside one busy process (a Python loop: a neighbour that holds one core), and prints the medians
in images/s side by side with the CPU named. The default of a run started by hand (`isokd.core.default_threads`: the
cores not busy by the one-minute load average) follows from this table.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

from isokd.core import cpu_model

HERE = Path(__file__).resolve().parent
STEP = [sys.executable, str(HERE/'train_step.py'), '--in-channels', '1', '--size', '28', '--bf16', 'off', '--json',
        '--blocks', '6', '--block', '3']

def images_per_s(threads: int) -> float:
    "KD-aug images/s of the step on `threads` threads, in a fresh process."
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    done = subprocess.run(STEP + ['--threads', str(threads)], capture_output=True, text=True, env=env, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])['images_per_s']['kd_aug']

def main():
    cores = len(os.sched_getaffinity(0))
    counts = sorted({1, cores})
    rows = {'quiet': {t: images_per_s(t) for t in counts}}
    neighbour = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    try:
        rows['one busy neighbour'] = {t: images_per_s(t) for t in counts}
    finally:
        neighbour.kill()
    print(f"CPU {cpu_model()}, {cores} cores; KD-aug step, float32, batch 128, images/s (median of 6 blocks)")
    print(f"{'machine':<20}" + ''.join(f"{f'{t} thread(s)':>14}" for t in counts) + f"{'ratio':>8}")
    for name, row in rows.items():
        ratio = row[counts[-1]] / row[1]
        print(f"{name:<20}" + ''.join(f"{row[t]:14.0f}" for t in counts) + f"{ratio:8.2f}")

if __name__ == '__main__':
    main()
