"`make docs`'s site in a real browser: headless Chromium (Debian's `chromium`) driven over the DevTools protocol."
import functools
import http.server
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import websocket

from conftest import ROOT

CHROMIUM = shutil.which('chromium')
# as the machine's own probe starts it: no sandbox as root, and no background connections on a closed network
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync']

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]

class Page:
    "One Chromium tab over the DevTools protocol: navigate, evaluate JavaScript, and the errors its console saw."
    def __init__(self, ws_url: str):
        self.ws, self.next_id, self.errors = websocket.create_connection(ws_url, timeout=30), 0, []
        for domain in ('Runtime', 'Log', 'Page'):
            self.call(f'{domain}.enable')

    def call(self, method: str, **params) -> dict:
        self.next_id += 1
        self.ws.send(json.dumps(dict(id=self.next_id, method=method, params=params)))
        while True:
            msg = json.loads(self.ws.recv())
            self.note(msg)
            if msg.get('id') == self.next_id:
                assert 'error' not in msg, msg
                return msg.get('result', {})

    def note(self, msg: dict):
        "Keep what the console reports as an error: exceptions, console.error, failed loads."
        method, params = msg.get('method'), msg.get('params', {})
        if method == 'Runtime.exceptionThrown':
            self.errors.append(params['exceptionDetails'].get('text'))
        elif method == 'Runtime.consoleAPICalled' and params.get('type') == 'error':
            self.errors.append(' '.join(str(a.get('value', a.get('description'))) for a in params['args']))
        elif method == 'Log.entryAdded' and params['entry']['level'] == 'error':
            self.errors.append(f"{params['entry']['text']} {params['entry'].get('url', '')}")

    def js(self, expression: str):
        return self.call('Runtime.evaluate', expression=expression, returnByValue=True)['result'].get('value')

    def wait_for(self, expression: str, timeout: float = 20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if value := self.js(expression):
                return value
            time.sleep(0.2)
        raise AssertionError(f"not true within {timeout} s: {expression}")

    def open(self, url: str):
        self.call('Page.navigate', url=url)
        self.wait_for("document.readyState === 'complete' && !!document.querySelector('.md-content')")

class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The site of a notebook with a figure and the pages, served over HTTP on a free port."
    out = tmp_path_factory.mktemp('site')
    built = subprocess.run([sys.executable, str(ROOT/'tools'/'build_docs.py'), '04_calibration', '--out', str(out)],
                           capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert built.returncode == 0, built.stdout + built.stderr
    handler = functools.partial(QuietHandler, directory=str(out))
    server = http.server.ThreadingHTTPServer(('127.0.0.1', free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()

@pytest.fixture(scope='module')
def page(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed here (.ci/chromium.sh installs it as root)")
    port = free_port()
    browser = subprocess.Popen([CHROMIUM, *FLAGS, f'--remote-debugging-port={port}',
                                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}", 'about:blank'],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                with urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list', timeout=2) as r:
                    tabs = [t for t in json.loads(r.read()) if t['type'] == 'page']
                if tabs:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError('Chromium did not open its DevTools port')
        yield Page(tabs[0]['webSocketDebuggerUrl'])
    finally:
        browser.terminate()
        browser.wait(timeout=30)

def test_the_home_page_and_a_notebook_render_with_their_figure(site, page):
    page.open(f'{site}/index.html')
    assert page.js("document.querySelector('h1').textContent.trim()") == 'isokd'
    links = page.js("[...document.querySelectorAll('.md-nav__link')].map(a => a.textContent.trim())")
    assert {'Home', 'Notebooks', 'Reliability'} <= set(links), links
    page.open(f'{site}/notebooks/04_calibration.html')
    # the notebook's figure is on the page and decoded
    assert page.wait_for("[...document.images].filter(i => i.src.startsWith('data:image/png') && i.naturalWidth > 0)"
                         ".length") >= 1
    assert 'def isotonic_calibrate' in page.js("document.querySelector('.md-content').textContent")
    assert page.errors == [], page.errors

def test_search_finds_isotonic_calibrate(site, page):
    page.open(f'{site}/index.html')
    # as a reader does: open the search box and type
    page.js("document.querySelector('label[for=__search]').click()")
    page.js("document.querySelector('input.md-search__input').focus()")
    page.call('Input.insertText', text='isotonic_calibrate')
    hits = page.wait_for("[...document.querySelectorAll('.md-search-result__item')].map(e => e.textContent)")
    assert any('isotonic_calibrate' in hit for hit in hits), hits
    assert page.errors == [], page.errors
