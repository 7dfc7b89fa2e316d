"The package's modules import each other at the top only, and never in a circle."
import ast
from graphlib import CycleError, TopologicalSorter

from conftest import ROOT

PACKAGE = ROOT/'isokd'

def imports(path) -> dict:
    "The isokd modules a module imports: {'top': names imported at module level, 'deferred': names imported in a body}."
    tree, found = ast.parse(path.read_text()), {'top': set(), 'deferred': set()}
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or '').startswith('isokd')):
            module = (node.module or '').removeprefix('isokd').lstrip('.')
            names = [module] if module else [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.removeprefix('isokd.') for a in node.names if a.name.startswith('isokd')]
        else:
            continue
        found['top' if id(node) in top else 'deferred'] |= {name for name in names if (PACKAGE/f'{name}.py').is_file()}
    return found

MODULES = {p.stem: imports(p) for p in PACKAGE.glob('*.py') if p.stem not in ('__init__', '_modidx')}

def test_no_module_imports_another_inside_a_function():
    deferred = {name: sorted(found['deferred']) for name, found in MODULES.items() if found['deferred']}
    assert not deferred, deferred

def test_the_import_graph_has_no_circle():
    try:
        order = list(TopologicalSorter({name: found['top'] for name, found in MODULES.items()}).static_order())
    except CycleError as e:
        raise AssertionError(f"isokd's modules import each other in a circle: {e.args[1]}") from None
    assert order.index('plan') < order.index('study') and order.index('report') < order.index('study')
