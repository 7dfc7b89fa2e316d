"""The grids that choose a scale's regime: students of one teacher, KD vs KD-aug, on a validation split. The cpu
scale's (issue #12), and the pairs scale's, run if the pairs study's regime check fails (issue #28).

    python tools/regime.py [SETTING ...]         # every setting of GRID by default; finished runs are skipped
    python tools/regime.py --pairs [SETTING ...] # every setting of PAIRS_GRID by default, under runs/regime-pairs/

Each setting is a study scale of its own (three configurations, two seeds) under runs/regime/<setting>/, all of
them distilling from the one teacher in runs/regime/teacher/. Every epoch is evaluated on 5,000 training images held
out of every training set (`n_val`), and the test set only after the last epoch, so that the regime is chosen on
the validation split. nbs/regime.ipynb tabulates what this wrote.
"""
import sys
from pathlib import Path

from isokd.core import project_root
from isokd.design import SCALES, Scale
from isokd.study import run_study

ROOT = project_root()/'runs'/'regime'
TEACHER = dict(dataset='fashion_mnist', arch='resnet14', epochs=15, schedule='cosine', bf16=True, n_val=5000)
STUDENT = dict(dataset='fashion_mnist', arch='resnet8', schedule='cosine', bf16=True, n_val=5000)
GRID = {
    'n5000-e30': dict(n_train=5000, epochs=30),
    'n2500-e60': dict(n_train=2500, epochs=60),
    'n10000-e20': dict(n_train=10000, epochs=20),
}
# bf16 autocast on the CPU against float32, on one setting (same seeds): accuracy within seed noise?
PRECISION_CHECK = {'n2500-e60-fp32': dict(n_train=2500, epochs=60, bf16=False)}
CONFIGS = 'kd,kd-mixup,kd-cutmix'

def run_setting(name: str, seeds: int = 2, configs: str = CONFIGS):
    "Run one setting of the grid: its scale, with the shared teacher linked in, two seeds of three configurations."
    SCALES[name] = Scale(teacher=TEACHER, student=STUDENT | (GRID | PRECISION_CHECK)[name], shared_teacher=True,
                         about=f'the regime grid: {name}')
    link = ROOT/name/'teacher'/'seed0'
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(Path('..')/'..'/'teacher', target_is_directory=True)
    return run_study(name, seeds, configs, ROOT, workers=2, threads=1, report=False)

# The pairs scale's grid, declared before its runs: its students (2,500 pairs, 60 epochs) had KD-aug below KD on the
# validation split of the regime check. Settings in the order they run, cheapest first; each distils from the pairs
# study's committed teacher, two seeds of `kd` and `kd-mixup`, float32. The rule: the first setting in this order whose
# KD-aug mean validation top-1 (last epoch) is above KD's becomes the pairs scale's; if none is, mixing does not help
# distillation at 100 classes within this budget, and the pairs study reports that instead of a method comparison.
PAIRS_ROOT = project_root()/'runs'/'regime-pairs'
PAIRS_TEACHER = project_root()/'runs'/'pairs'/'teacher'/'seed0'
PAIRS_GRID = {
    'n2500-e120': dict(n_train=2500, epochs=120),
    'n5000-e60': dict(n_train=5000, epochs=60),
    'n2500-e240': dict(n_train=2500, epochs=240),
}

def run_pairs_setting(name: str, seeds: int = 2):
    "One setting of the pairs grid: a scale distilling from the pairs study's teacher, two seeds of KD and KD-aug."
    pairs = SCALES['pairs']
    SCALES[name] = Scale(teacher=pairs.teacher, student=pairs.student | PAIRS_GRID[name], shared_teacher=True,
                         about=f'the pairs regime grid: {name}')
    return run_study(name, seeds, 'kd,kd-mixup', PAIRS_ROOT, workers=2, threads=1, report=False,
                     teacher=PAIRS_TEACHER)

if __name__ == '__main__':
    if sys.argv[1:2] == ['--pairs']:
        for name in sys.argv[2:] or PAIRS_GRID:
            run_pairs_setting(name)
    else:
        for name in sys.argv[1:] or GRID:
            run_setting(name, configs=CONFIGS if name in GRID else 'kd,kd-mixup')
