"Atomic writes, parameter checks and project paths."
import json
import pytest
import torch
from isokd.core import atomic_write_json, atomic_save, check_range, get_device, project_root, resolve_path

def test_failed_write_keeps_the_old_file(tmp_path):
    p = atomic_write_json(tmp_path/'m.json', {'a': 1})
    class Boom:  # fails inside torch.save, after the temporary file was opened
        def __reduce__(self): raise RuntimeError('boom')
    with pytest.raises(RuntimeError, match='boom'):
        atomic_save({'x': Boom()}, tmp_path/'m.json')
    assert json.loads(p.read_text()) == {'a': 1}
    assert sorted(f.name for f in tmp_path.iterdir()) == ['m.json']

def test_paths_resolve_against_the_project_root(tmp_path, monkeypatch):
    monkeypatch.chdir(project_root()/'nbs')
    assert resolve_path('runs') == project_root()/'runs'
    monkeypatch.chdir(tmp_path)   # outside the project: found through the installed package
    assert (project_root()/'settings.ini').is_file()

def test_bool_is_not_a_number():
    with pytest.raises(ValueError):
        check_range('alpha', True, 0, 1)

def test_cuda_when_absent_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip('CUDA is available here')
    with pytest.raises(ValueError, match='CUDA is not available'):
        get_device('cuda')
