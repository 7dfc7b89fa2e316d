"`make docs` (tools/build_docs.py): the site of executed notebooks, with their figures, and a list of them."
import subprocess
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent


def build_docs(*args, timeout=120):
    "Run the docs build as `make docs` does, through this Python; the CompletedProcess."
    return subprocess.run([sys.executable, str(ROOT/'tools'/'build_docs.py'), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def write_notebook(path, *sources, title='Probe', summary='What the docs build does to a notebook.'):
    "A notebook of `sources` (code cells) after an nbdev front matter."
    cells = [new_markdown_cell(f"# {title}\n\n> {summary}"), *map(new_code_cell, sources)]
    nbformat.write(new_notebook(cells=cells), path)
    return path


def test_pages_are_executed_with_figures_and_indexed(tmp_path):
    probe = write_notebook(
        tmp_path/'99_probe.ipynb',
        "#| hide\nimport os\nfrom pathlib import Path\nhidden = 'HIDDEN' + '-CELL'",
        "print('answer', 6 * 7)",
        "print('runs in', os.environ['ISOKD_RUNS'])\nprint('works in', Path.cwd())",
        "#| slow\nprint('SLOW' + '-CELL-RAN')",
        "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2]);")
    out = tmp_path/'docs'
    r = build_docs(probe, '01_data', '--out', out)
    assert r.returncode == 0, r.stdout + r.stderr
    page = (out/'notebooks'/'99_probe.html').read_text()
    # outputs of the run: the printed answer, the scratch runs folder and working copy, the figure
    assert 'answer 42' in page
    runs = page.split('runs in ')[1].split('\n')[0].strip()
    assert 'isokd-docs-' in runs and not runs.startswith(str(ROOT))
    assert not page.split('works in ')[1].split('\n')[0].strip().startswith(str(ROOT))
    assert page.count('src="data:image/png;base64,') == 1
    # the cells nbdev_test skips are not run, the hidden ones not shown
    assert 'SLOW-CELL-RAN' not in page and "'-CELL-RAN'" in page
    assert 'HIDDEN' not in page
    # a library notebook, executed: the repr of the dataset its demonstration registers
    assert "ImageData('random16', train=(30, 3, 16, 16)" in (out/'notebooks'/'01_data.html').read_text()
    listing = (out/'notebooks'/'index.html').read_text()
    assert '<a href="99_probe.html">Probe</a>' in listing and 'What the docs build does to a notebook.' in listing
    assert '<a href="01_data.html">Data</a>' in listing
    # the home page is the README, the pages of docs/ are there
    assert 'In your own training loop' in (out/'index.html').read_text() and (out/'docs'/'methods.html').is_file()
    # the API page, from the docstrings: each parameter of KDLoss and of the functional losses
    api = (out/'api.html').read_text()
    for text in ('isokd.KDLoss', 'isotonic_mode : str', 'isokd.functional.kd_i_loss', 'reduction : str'):
        assert text in api, text
    assert not (ROOT/'nbs'/'99_probe.ipynb').exists()


def test_failures_are_reported(tmp_path):
    broken = write_notebook(tmp_path/'97_broken.ipynb', "raise ValueError('a broken' + ' notebook')", title='Broken')
    slow = write_notebook(tmp_path/'98_slow.ipynb', "import time\ntime.sleep(120)", title='Slow')
    out = tmp_path/'docs'
    r = build_docs(broken, slow, '--out', out, '--timeout', 3)
    assert r.returncode == 1
    assert 'ValueError: a broken notebook' in r.stdout
    assert 'TimeoutError: the notebook did not finish within 3 s' in r.stdout
    listing = (out/'notebooks'/'index.html').read_text()
    assert listing.count('(failed: ') == 2
    # the page shows how far the notebook got
    assert 'a broken notebook' in (out/'notebooks'/'97_broken.html').read_text()


def test_unknown_notebook(tmp_path):
    r = build_docs('no_such_notebook', '--out', tmp_path)
    assert r.returncode != 0 and "no notebook 'no_such_notebook'" in r.stderr
