"""How finely the library notebooks are cut, as nbdev means it: per notebook and overall, the exported cells, the
median lines an exported cell, the share of exported cells that define three or more names, and the share followed by
a check (the next code cell is not exported: a demonstration or an assert). `--check` fails below the project's bar:
median <= 12 lines an exported cell and >= 80% followed by a check, overall.

    python tools/notebook_grain.py [--check]
"""
import argparse
import ast
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_MEDIAN_LINES, MIN_CHECKED = 12, 0.80


def code_cells(path: Path) -> list[str]:
    "The source of each code cell of a notebook."
    return [''.join(c['source']) for c in json.loads(path.read_text())['cells'] if c['cell_type'] == 'code']


def is_exported(source: str) -> bool:
    return source.lstrip().startswith('#| export')


def defined_names(source: str) -> int:
    "Functions, classes and module-level names a cell defines (imports not counted)."
    tree = ast.parse(source)
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return len(names)


def grain(path: Path) -> dict:
    "The exported cells of one notebook: their line counts, names defined, and whether a check follows each."
    cells = code_cells(path)
    exported = [(i, s) for i, s in enumerate(cells) if is_exported(s) and defined_names(s)]
    return dict(lines=[len(s.splitlines()) - 1 for _, s in exported],
                names=[defined_names(s) for _, s in exported],
                checked=[i + 1 < len(cells) and not is_exported(cells[i + 1]) for i, _ in exported])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--check', action='store_true', help="exit 1 below the bar")
    args = parser.parse_args()
    rows, total = [], dict(lines=[], names=[], checked=[])
    for path in sorted((ROOT/'nbs').glob('[0-9][0-9]*.ipynb')):
        g = grain(path)
        if g['lines']:
            rows.append((path.stem, g))
            for k in total:
                total[k] += g[k]
    print(f"{'notebook':<16} {'cells':>5} {'median lines':>12} {'3+ names':>8} {'checked':>8}")
    for name, g in rows + [('all', total)]:
        n = len(g['lines'])
        print(f"{name:<16} {n:>5} {statistics.median(g['lines']):>12g} {sum(k >= 3 for k in g['names']) / n:>8.0%} "
              f"{sum(g['checked']) / n:>8.0%}")
    median, checked = statistics.median(total['lines']), sum(total['checked']) / len(total['checked'])
    met = median <= MAX_MEDIAN_LINES and checked >= MIN_CHECKED
    print(f"bar: median <= {MAX_MEDIAN_LINES} lines and >= {MIN_CHECKED:.0%} checked: "
          f"{'met' if met else 'not met'} ({median:g} lines, {checked:.0%})")
    return 0 if met or not args.check else 1


if __name__ == '__main__':
    sys.exit(main())
