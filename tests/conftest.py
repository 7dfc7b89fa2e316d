import os, sys, subprocess, tempfile
from pathlib import Path
import pytest

# Runs without an explicit out_dir, and cached teachers, go to a scratch folder, never to the project's runs/.
os.environ['ISOKD_RUNS'] = tempfile.mkdtemp(prefix='isokd-test-runs-')

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

def papermill(nb, out, cwd=ROOT, **params):
    "Run a notebook of nbs/ through papermill's CLI, as a user would (no `out`: papermill prints it); return the CompletedProcess."
    args = [str(BIN/'papermill'), str(ROOT/'nbs'/nb), *([str(out)] if out is not None else []), '--no-progress-bar']
    for k, v in params.items(): args += ['-p', k, str(v)]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=600)

@pytest.fixture
def tiny():
    "Parameters of a tiny, fast run on the synthetic dataset."
    return dict(dataset='synthetic', arch='resnet8', teacher_arch='resnet8', epochs=2, teacher_epochs=2,
                batch_size=64, device='cpu')
