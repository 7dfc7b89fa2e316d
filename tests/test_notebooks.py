"The papermill notebooks: one parameters cell whose defaults are the configuration's defaults."
import dataclasses, json
import pytest
import papermill as pm

from isokd.train import TeacherConfig, KDConfig
from conftest import ROOT

CONFIGS = {'run_teacher.ipynb': TeacherConfig, 'run_kd.ipynb': KDConfig}
try:
    from isokd.crd import CRDConfig; CONFIGS['run_crd.ipynb'] = CRDConfig
except ImportError: pass

@pytest.mark.parametrize('nb', sorted(CONFIGS))
def test_parameters_cell_matches_the_config(nb):
    cells = json.loads((ROOT/'nbs'/nb).read_text())['cells']
    assert sum('parameters' in c['metadata'].get('tags', []) for c in cells) == 1
    params = pm.inspect_notebook(str(ROOT/'nbs'/nb))
    fields = {f.name: f.default for f in dataclasses.fields(CONFIGS[nb])}
    assert set(params) == set(fields)
    for name, p in params.items():
        assert eval(p['default']) == fields[name], name

def test_every_run_notebook_is_checked():
    assert {p.name for p in (ROOT/'nbs').glob('run_*.ipynb')} == set(CONFIGS)
