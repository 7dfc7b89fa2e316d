"The papermill notebooks: one parameters cell whose defaults are the configuration's defaults."
import dataclasses
import json
import pytest
import papermill as pm

from isokd.config import TeacherConfig, KDConfig, CRDConfig
from conftest import ROOT, papermill

CONFIGS = {'run_teacher.ipynb': TeacherConfig, 'run_kd.ipynb': KDConfig, 'run_crd.ipynb': CRDConfig}

@pytest.mark.parametrize('nb', sorted(CONFIGS))
def test_parameters_cell_matches_the_config(nb):
    cells = json.loads((ROOT/'nbs'/nb).read_text())['cells']
    assert sum('parameters' in c['metadata'].get('tags', []) for c in cells) == 1
    params = pm.inspect_notebook(str(ROOT/'nbs'/nb))
    fields = {f.name: f.default for f in dataclasses.fields(CONFIGS[nb])}
    assert set(params) == set(fields)
    for name, p in params.items():
        assert eval(p['default'], {CONFIGS[nb].__name__: CONFIGS[nb]}) == fields[name], name

def test_every_run_notebook_is_checked():
    assert {p.name for p in (ROOT/'nbs').glob('run_*.ipynb')} == set(CONFIGS)

@pytest.mark.parametrize('nb', sorted(CONFIGS))
def test_a_misspelt_parameter_name_is_refused_before_anything_is_written(tmp_path, nb):
    r = papermill(nb, tmp_path/'out.ipynb', calibraton='isotonic', dataset='synthetic', out_dir=tmp_path/'run')
    assert r.returncode != 0
    kind = CONFIGS[nb].kind
    hint = '' if kind == 'teacher' else " ('calibraton': did you mean 'calibration'?)"
    assert f"unknown parameter 'calibraton' for a {kind} run{hint}; valid names: dataset, arch" in r.stderr + r.stdout
    assert not (tmp_path/'run').exists()

def test_the_projects_kernel_preloads_tcmalloc():
    "papermill's kernel gets tcmalloc as `make run` does (make setup writes the kernelspec: tools/install_kernel.py)."
    import sys
    from jupyter_client.kernelspec import KernelSpecManager
    sys.path.insert(0, str(ROOT/'tools'))
    from install_kernel import tcmalloc
    spec = KernelSpecManager().get_kernel_spec('python3')
    assert spec.argv[0] == sys.executable, f"{spec.resource_dir}: not this environment's kernel; run make setup"
    assert spec.env.get('LD_PRELOAD') == tcmalloc()
