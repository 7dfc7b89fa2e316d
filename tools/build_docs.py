"""The documentation site in _docs/: the library notebooks, executed, beside the project's pages, built by mkdocs
(the Material theme, with navigation and search; mkdocs-jupyter renders the notebooks).

    python tools/build_docs.py [NOTEBOOK ...] [--out _docs] [--timeout 300] [--jobs 2]

With no NOTEBOOK, every numbered notebook of nbs/ is built; a NOTEBOOK is a path (nbs/01_data.ipynb), a file name
(01_data.ipynb) or a stem (01_data). Each notebook runs top to bottom in a fresh kernel of this Python, in a temporary
working copy of nbs/ (nothing it writes lands in the project), with ISOKD_RUNS pointed at a temporary folder (no run
lands in runs/), and under a deadline of --timeout seconds for the whole notebook. Cells that `nbdev_test` skips (one
of the `tst_flags` of settings.ini, such as `#| slow` or `#| slurm`, or `#| eval: false`) are shown but not run;
`#| hide` cells run but are not shown. The site's home page is README.md; it holds the pages of docs/, the committed
studies' pages (runs/<scale>/README.md and their figures) and a page per notebook, with figures embedded, and a list
of the notebooks with their title and summary line, and an API page written from the docstrings of the public names
(`isokd`'s and `isokd.functional`'s). The exit status is 1 if a notebook failed (its page then shows the
error) or mkdocs did.
"""
import argparse
import configparser
import importlib
import inspect
import json
import os
import subprocess
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import isokd
import isokd.functional as functional
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parent.parent
NBS = ROOT/'nbs'
NUMBERED = re.compile(r"\d\d[a-z]?_.+\.ipynb")
DIRECTIVE = re.compile(r'\s*#\|\s*(.+?)\s*$')
SKIP_TAG = 'skip-execution'


def numbered_notebooks() -> list[Path]:
    "The library notebooks of nbs/, in their order."
    return sorted(p for p in NBS.glob('*.ipynb') if NUMBERED.fullmatch(p.name))


def find_notebook(name: str) -> Path:
    "A notebook of nbs/ given as a path, a file name or a stem."
    for path in (Path(name), NBS/name, NBS/f'{name}.ipynb'):
        if path.suffix == '.ipynb' and path.is_file():
            return path.resolve()
    raise SystemExit(f"build_docs: no notebook {name!r} (give a path, a file name or a stem of a notebook in nbs/)")


def skipped_flags() -> set[str]:
    "The cell flags that nbdev_test skips: settings.ini's tst_flags."
    settings = configparser.ConfigParser(delimiters=['='])
    settings.read(ROOT/'settings.ini', encoding='utf-8')
    return set(re.split(r'[\s|]+', settings['DEFAULT'].get('tst_flags', '').strip())) - {''}


def directives(cell) -> list[str]:
    "The `#|` directives of a cell, such as 'export', 'hide' or 'eval: false'."
    found = (DIRECTIVE.match(line) for line in cell.source.splitlines())
    return [m.group(1) for m in found if m]


def mark_skipped(nb, flags: set[str]):
    "Tag the code cells that nbdev_test would not run, so that the kernel does not run them either."
    for cell in nb.cells:
        if cell.cell_type != 'code':
            continue
        given = directives(cell)
        if flags & set(given) or any(re.fullmatch(r'eval:\s*false', d, re.I) for d in given):
            cell.metadata.setdefault('tags', []).append(SKIP_TAG)


def execute(nb, workdir: Path, timeout: float, env: dict) -> str | None:
    "Run `nb` in place in a fresh kernel (environment `env`, working folder `workdir`), its cells within `timeout` s."
    deadline = None

    def time_left(cell) -> int:
        nonlocal deadline
        # the clock starts at the first cell, once the kernel is up
        if deadline is None:
            deadline = time.monotonic() + timeout
        # each cell may take what is left of the notebook's time (nbclient reads 0 as no limit)
        return max(1, int(deadline - time.monotonic()))

    # out of time, the kernel is interrupted (not shut down while busy) and the cell fails with this error
    too_long = dict(ename='TimeoutError', evalue=f"the notebook did not finish within {timeout:g} s", traceback=[])
    # the kernel's own warnings (such as that its local TCP sockets are unencrypted) would bury the build's log
    client = NotebookClient(nb, timeout_func=time_left, interrupt_on_timeout=True, error_on_timeout=too_long,
                            kernel_name='python3', skip_cells_with_tag=SKIP_TAG,
                            extra_arguments=['--IPKernelApp.log_level=ERROR'],
                            resources={'metadata': {'path': str(workdir)}})
    try:
        client.execute(env=env)
    except CellExecutionError as e:
        return f"{e.ename}: {e.evalue}"
    except (CellTimeoutError, DeadKernelError) as e:
        lines = str(e).strip().splitlines()
        return f"{type(e).__name__}: {lines[-1] if lines else ''}"
    return None


def for_reading(nb):
    "`nb` without the cells a reader of the docs does not need: `#| hide` and `#| default_exp`."
    nb.cells = [c for c in nb.cells
                if not any(d == 'hide' or d.startswith('default_exp') for d in directives(c))]
    return nb


def title_and_summary(nb, fallback: str) -> tuple[str, str]:
    "The notebook's `# title` and `> summary` lines (nbdev's front matter)."
    title, summary = fallback, ''
    for cell in nb.cells:
        if cell.cell_type != 'markdown':
            continue
        for line in cell.source.splitlines():
            if line.startswith('# ') and title == fallback:
                title = line[2:].strip()
            elif line.startswith('> ') and not summary:
                summary = line[2:].strip()
        break
    return title, summary


def build(path: Path, workdir: Path, pages: Path, timeout: float, flags: set[str], env: dict) -> dict:
    "Execute the working copy of `path` into `pages`, for reading; what the list of notebooks says of it."
    start = time.monotonic()
    nb = nbformat.read(workdir/path.name, as_version=4)
    mark_skipped(nb, flags)
    error = execute(nb, workdir, timeout, env)
    title, summary = title_and_summary(nb, path.stem)
    page = pages/path.name
    nbformat.write(for_reading(nb), page)
    seconds = time.monotonic() - start
    print(f"{path.name:<24} {seconds:6.1f} s  {'FAILED: ' + error if error else 'ok'}", flush=True)
    return dict(page=page.name, title=title, summary=summary, error=error, seconds=seconds)


def stage_pages(site: Path):
    "README.md as the home page, the pages of docs/, and each committed study's page with its figures."
    shutil.copy(ROOT/'README.md', site/'index.md')
    shutil.copytree(ROOT/'docs', site/'docs')
    for page in sorted(ROOT.glob('runs/*/README.md')):
        folder = site/page.parent.relative_to(ROOT)
        folder.mkdir(parents=True)
        for file in (page, *page.parent.glob('*.png')):
            shutil.copy(file, folder/file.name)


def api_names() -> dict[str, list[str]]:
    "The public names a training loop uses, by module: `isokd.__all__` and the callables of `isokd.functional`."
    loop = [n for n in isokd.__all__ if callable(getattr(isokd, n))]
    return {'isokd': loop, 'isokd.functional': [n for n in functional.__all__ if callable(getattr(functional, n))]}


def write_api_page(site: Path):
    "api.md: each public name's signature and docstring (numpy style, as `help()` shows it)."
    lines = ["# API", "", "Written from the docstrings by `tools/build_docs.py`: what `help()` shows for each name.",
             ""]
    for module, names in api_names().items():
        lines += [f"## `{module}`", ""]
        for name in names:
            obj = getattr(importlib.import_module(module), name)
            lines += [f"### `{module}.{name}`", "", "```text", f"{name}{inspect.signature(obj)}", "",
                      inspect.cleandoc(obj.__doc__ or ''), "```", ""]
    (site/'api.md').write_text('\n'.join(lines))


def write_notebook_list(pages: Path, entries: list[dict]):
    "notebooks/index.md: each notebook's title, linked to its page, its summary line, and its failure if it failed."
    rows = [f"- [{e['title']}]({e['page']}){' (failed: ' + e['error'] + ')' if e['error'] else ''}: {e['summary']}"
            for e in entries]
    when = time.strftime('%Y-%m-%d %H:%M %Z')
    head = f"# Notebooks\n\nThe library notebooks, executed on {when}.\n\n"
    (pages/'index.md').write_text(head + '\n'.join(rows) + '\n')


def mkdocs_config(site: Path, out: Path, entries: list[dict]) -> dict:
    "The site: home, study pages, the pages of docs/, the notebooks; Material without fonts or scripts from the web."
    titles = {p.stem: p.read_text().split('\n', 1)[0].lstrip('# ').strip() for p in sorted((site/'docs').glob('*.md'))}
    studies = [{f"The {p.parent.name} study": str(p.relative_to(site))} for p in sorted(site.glob('runs/*/README.md'))]
    return dict(site_name='isokd', docs_dir=str(site), site_dir=str(out), use_directory_urls=False,
                theme=dict(name='material', font=False, features=['navigation.sections', 'search.highlight']),
                plugins=['search', {'mkdocs-jupyter': dict(execute=False, include_source=True,
                                                           include_requirejs=False)}],
                nav=[{'Home': 'index.md'}, *studies,
                     {'Pages': [{title: f'docs/{stem}.md'} for stem, title in titles.items()]}, {'API': 'api.md'},
                     {'Notebooks': ['notebooks/index.md', *({e['title']: f"notebooks/{e['page']}"} for e in entries)]}])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('notebooks', nargs='*', help='notebooks to build (default: every numbered one of nbs/)')
    parser.add_argument('--out', default=str(ROOT/'_docs'), help='folder of the HTML pages (default: _docs/)')
    parser.add_argument('--timeout', type=float, default=300, help='seconds a notebook may take (default: 300)')
    parser.add_argument('--jobs', type=int, default=2, help='notebooks run at once (default: 2)')
    args = parser.parse_args(argv)
    notebooks = [find_notebook(n) for n in args.notebooks] or numbered_notebooks()
    out = Path(args.out).resolve()
    scratch = Path(tempfile.mkdtemp(prefix='isokd-docs-'))
    site, pages = scratch/'site', scratch/'site'/'notebooks'
    pages.mkdir(parents=True)
    try:
        workdir = scratch/'nbs'
        shutil.copytree(NBS, workdir, ignore=shutil.ignore_patterns('.ipynb_checkpoints', '__pycache__'))
        # a notebook given from outside nbs/ runs beside the others
        for path in notebooks:
            shutil.copy(path, workdir/path.name)
        env = os.environ | {'ISOKD_RUNS': str(scratch/'runs'),
                            # figures go into the page, whatever backend the caller's environment names
                            'MPLBACKEND': 'module://matplotlib_inline.backend_inline'}
        # notebooks that run side by side share the cores rather than oversubscribe them
        env.setdefault('OMP_NUM_THREADS', str(max(1, (os.cpu_count() or 1) // max(1, args.jobs))))
        flags = skipped_flags()
        start = time.monotonic()
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            entries = list(pool.map(lambda p: build(p, workdir, pages, args.timeout, flags, env), notebooks))
        stage_pages(site)
        write_api_page(site)
        write_notebook_list(pages, entries)
        config = scratch/'mkdocs.yml'
        # JSON is YAML: no YAML writer needed
        config.write_text(json.dumps(mkdocs_config(site, out, entries), indent=1))
        made = subprocess.run([sys.executable, '-m', 'mkdocs', 'build', '--quiet', '-f', str(config)],
                              capture_output=True, text=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    failed = [e['page'] for e in entries if e['error']]
    if made.returncode:
        print(f"mkdocs failed:\n{made.stdout}{made.stderr}")
    print(f"{len(entries)} notebooks in {time.monotonic() - start:.0f} s, site in {out}"
          f"{'; failed: ' + ', '.join(failed) if failed else ''}")
    return 1 if failed or made.returncode else 0


if __name__ == '__main__':
    sys.exit(main())
