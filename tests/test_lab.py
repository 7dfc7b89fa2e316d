"`make lab`: JupyterLab on nbs/ with the project's kernel, used through its REST API and a kernel's websocket."
import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import websocket

from conftest import BIN, ROOT

sys.path.insert(0, str(ROOT/'tools'))
from install_kernel import tcmalloc  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

def execute(ws, code: str, timeout: float = 60) -> str:
    "Run `code` in the kernel behind the websocket `ws`; its printed output (an error raises)."
    msg_id = uuid.uuid4().hex
    header = dict(msg_id=msg_id, msg_type='execute_request', username='test', session=uuid.uuid4().hex, version='5.3')
    ws.send(json.dumps(dict(header=header, parent_header={}, metadata={}, channel='shell', buffers=[],
                            content=dict(code=code, silent=False, store_history=False, user_expressions={},
                                         allow_stdin=False))))
    printed, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = json.loads(ws.recv())
        if msg.get('parent_header', {}).get('msg_id') != msg_id:
            continue
        kind, content = msg['msg_type'], msg['content']
        if kind == 'stream':
            printed.append(content['text'])
        elif kind == 'error':
            raise AssertionError(f"{content['ename']}: {content['evalue']}")
        elif kind == 'execute_reply':
            return ''.join(printed)
    raise TimeoutError(code)

def test_make_lab_serves_the_notebooks_and_runs_a_library_cell_in_the_projects_kernel():
    port, token = free_port(), secrets.token_hex(16)
    args = f"--no-browser --port={port} --ServerApp.ip=127.0.0.1 --IdentityProvider.token={token}"
    server = subprocess.Popen(['make', '-s', 'lab', f'LAB_ARGS={args}'], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    base, auth = f"http://127.0.0.1:{port}", {'Authorization': f'token {token}'}

    def api(path, method='GET', body=None):
        request = urllib.request.Request(base + path, method=method, headers=auth,
                                         data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read() or b'null')

    try:
        for _ in range(120):
            try:
                listing = api('/api/contents')
                break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError('JupyterLab did not answer within 60 s')
        names = {item['name'] for item in listing['content']}
        assert {'05_kd.ipynb', 'run_kd.ipynb', 'report.ipynb'} <= names
        assert api('/api/kernelspecs')['default'] == 'python3'
        notebook = api('/api/contents/05_kd.ipynb')['content']
        imports = next(''.join(c['source']) for c in notebook['cells'] if 'import' in ''.join(c['source']))
        kernel = api('/api/kernels', 'POST', {'name': 'python3'})
        ws = websocket.create_connection(f"ws://127.0.0.1:{port}/api/kernels/{kernel['id']}/channels",
                                         header=[f"Authorization: token {token}"], timeout=60)
        # a library notebook's first cell, then a probe of the kernel it ran in
        execute(ws, imports)
        printed = execute(ws, "import os, sys\nfrom isokd.kd import KDLoss\nprint(sys.executable)\n"
                              "print(os.environ.get('LD_PRELOAD', '-'))\nprint(KDLoss('kd-i').objective())")
        executable, preload, objective = printed.splitlines()[:3]
        # the project's kernel: this environment's Python, with tcmalloc where it is installed (tools/install_kernel.py)
        assert executable.startswith(str(BIN.parent)) and objective.startswith('0.05 CE(z, w)')
        assert preload == (tcmalloc() or '-')
        ws.close()
    finally:
        subprocess.run(['pkill', '-TERM', '-g', str(server.pid)], check=False)
        server.wait(timeout=30)
