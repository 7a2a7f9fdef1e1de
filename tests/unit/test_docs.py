"""The README and the shipped files say what the code does."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [ln.split("#")[0].strip() for ln in first_block.splitlines() if ln.strip()]
    assert commands == ["make run", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_config_reference_matches_the_code():
    out = subprocess.run([sys.executable, "-m", "fedsilo.cli", "keys", "--markdown"],
                         capture_output=True, text=True, check=True).stdout
    text = (ROOT / "README.md").read_text()
    block = text[text.index("<!-- keys:start -->"):text.index("<!-- keys:end -->")]
    assert block.split("\n", 1)[1].strip() == out.strip()


def test_library_never_imports_the_apps():
    """Dependency direction: server -> strategies -> fedsilo; clients -> fedsilo."""
    bad = []
    for path in (ROOT / "src" / "fedsilo").rglob("*.py"):
        for line in path.read_text().splitlines():
            if re.match(r"\s*(from|import) (server|clients|strategies)\b", line):
                bad.append(f"{path.name}: {line.strip()}")
    for path in (ROOT / "strategies").rglob("*.py"):
        for line in path.read_text().splitlines():
            if re.match(r"\s*(from|import) (server|clients)\b", line):
                bad.append(f"{path.name}: {line.strip()}")
    assert bad == []
