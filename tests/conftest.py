import os
import sys
import subprocess
import tempfile
import shutil
from pathlib import Path
import pytest

# Runs without an explicit out_dir, and cached teachers, go to a scratch folder, never to the project's runs/; the
# folder goes when the session ends. Made in pytest's hooks, not on import: the DDP scripts that torchrun starts import
# this module too (through the tests' helpers), and would each leave a folder behind.
def pytest_configure(config):
    os.environ['ISOKD_RUNS'] = tempfile.mkdtemp(prefix='isokd-test-runs-')

def pytest_unconfigure(config):
    shutil.rmtree(os.environ.pop('ISOKD_RUNS'), ignore_errors=True)

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

def papermill(nb, out, cwd=ROOT, **params):
    """Run a notebook of nbs/ through papermill's CLI, as a user would; return the CompletedProcess.

    With no `out`, papermill prints the executed notebook."""
    args = [str(BIN/'papermill'), str(ROOT/'nbs'/nb), *([str(out)] if out is not None else []), '--no-progress-bar']
    for k, v in params.items():
        args += ['-p', k, str(v)]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)

@pytest.fixture
def tiny():
    "Parameters of a tiny, fast run on the synthetic dataset."
    return dict(dataset='synthetic', arch='resnet8', teacher_arch='resnet8', epochs=2, teacher_epochs=2,
                batch_size=64, device='cpu', eval_every=1)

def kd_of(student, teacher, calibration='none', isotonic_mode='add', temperature=4.5, alpha=0.95, rho=2.0):
    "The KD distiller of a run with these parameters, built as `isokd.runs.run` builds it (`KDConfig.build`)."
    from isokd.config import KDConfig
    config = KDConfig(calibration=calibration, isotonic_mode=isotonic_mode, temperature=temperature, alpha=alpha,
                      soft_constraint_ratio=rho, device='cpu')
    return config.build(student, teacher, None)

def crd_of(student, teacher, labels, calibration='none', isotonic_mode='add', nce_n=16384, beta=0.8):
    "The CRD distiller of a run with these parameters, built as `isokd.runs.run` builds it (`CRDConfig.build`)."
    from isokd.config import CRDConfig
    config = CRDConfig(calibration=calibration, isotonic_mode=isotonic_mode, nce_n=nce_n, beta=beta, device='cpu')
    return config.build(student, teacher, labels)
