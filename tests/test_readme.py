"README.md and docs/, as a reader uses them: commands name programs of the environment, links lead to files."
import os
import re
import shutil

import pytest

from conftest import BIN, ROOT

PAGES = [ROOT/'README.md', *sorted((ROOT/'docs').glob('*.md'))]

def shell_lines(text: str) -> list[str]:
    "The commands of a page's ```bash blocks: continuation lines joined, comments and blank lines dropped."
    lines = []
    for block in re.findall(r'```bash\n(.*?)```', text, re.S):
        for line in block.replace('\\\n', ' ').splitlines():
            if line := line.split(' #')[0].strip():
                lines.append(line)
    return lines

@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.name)
def test_every_command_names_a_program_of_the_environment(page):
    # `make setup` puts the environment's programs in .venv/bin; the README says to activate it once per shell
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    for line in shell_lines(page.read_text()):
        program = line.split()[0]
        assert shutil.which(program, path=path), f"{page.name}: {program!r} of {line!r} is not in {path}"

@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.name)
def test_every_link_leads_to_a_file(page):
    for target in re.findall(r'\]\(([^)#]+)\)', page.read_text()):
        if not target.startswith(('http://', 'https://')):
            assert (page.parent/target).exists(), f"{page.name} links to {target}, which does not exist"

def test_the_pages_show_commands():
    assert len(shell_lines((ROOT/'README.md').read_text())) >= 2
