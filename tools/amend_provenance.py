"""Add to a committed study's records what its executed notebooks and its reproduction make knowable, and that runs
recorded before the records had the field: the precision each run trained in, with how that is known.

    python tools/amend_provenance.py runs/cpu          # writes each run's metrics.json in place, atomically

For every finished run without a `precision` record: `autocast` from its `bf16` parameter; `native_bf16` from the
images per second its notebook printed (median over epochs): above 500 is native (an emulated bf16 step runs at about
45-60 images/s on one core of a 2-core AVX2-only CPU, docs/speed.md; native runs print 900-1,800), and `reason`
says so. The amendment is marked `amended: true` with the rule that produced it; nothing else in the record changes.
A run that already records its precision is left as it is, so running this twice changes nothing.
"""
import json
import re
import statistics
import sys
from pathlib import Path

from isokd.core import atomic_write_json

# images per second above which bf16 was native: emulated steps are 10x slower than float32, native ones faster
NATIVE_MIN_IMG_S = 500
EPOCH_LINE = re.compile(r'epoch \d+/\d+ .* (\d+) img/s')

def printed_throughput(notebook: Path) -> float | None:
    "The median images per second over the epoch lines a run's notebook printed; None when it printed none."
    cells = json.loads(notebook.read_text())['cells']
    text = ''.join(''.join(o.get('text', '')) for c in cells for o in c.get('outputs', []))
    rates = [int(m) for m in EPOCH_LINE.findall(text)]
    return statistics.median(rates) if rates else None

def amended_precision(metrics: dict, notebook: Path) -> dict | None:
    "The `precision` record of a run that lacks one, from its parameters and notebook; None if it has one."
    if metrics.get('precision') or not metrics.get('finished'):
        return None
    bf16 = bool(metrics['params'].get('bf16'))
    rate = printed_throughput(notebook) if notebook.exists() else None
    native = None if not bf16 or rate is None else rate > NATIVE_MIN_IMG_S
    how = (f"bf16={bf16} in its parameters; its notebook printed a median of {rate:g} img/s"
           if rate is not None else f"bf16={bf16} in its parameters; its notebook printed no throughput")
    if bf16 and native is not None:
        how += f" ({'above' if native else 'below'} {NATIVE_MIN_IMG_S}: bf16 {'native' if native else 'emulated'})"
    return dict(autocast='bf16' if bf16 else 'fp32', native_bf16=native, requested=bf16, reason=how, amended=True,
                cpu=metrics.get('versions', {}).get('cpu'))

def main(argv=None) -> int:
    roots = [Path(a) for a in (argv if argv is not None else sys.argv[1:])]
    if not roots:
        print(__doc__)
        return 2
    changed = 0
    for root in roots:
        for path in sorted(root.glob('*/seed*/metrics.json')):
            metrics = json.loads(path.read_text())
            precision = amended_precision(metrics, path.parent/'run.ipynb')
            if precision:
                atomic_write_json(path, {**metrics, 'precision': precision})
                changed += 1
    print(f"{changed} records amended")
    return 0

if __name__ == '__main__':
    sys.exit(main())
