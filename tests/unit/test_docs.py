"""The README and the shipped files say what the code does."""

from __future__ import annotations

import re

from tests.conftest import ROOT


def test_readme_opens_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    commands = [ln.split("#")[0].strip() for ln in first_block.splitlines() if ln.strip()]
    assert commands == ["make run", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_config_reference_page_matches_the_code():
    import importlib.util

    spec = importlib.util.spec_from_file_location("sync_docs", ROOT / "tools" / "sync_docs.py")
    sync_docs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sync_docs)
    assert (ROOT / "docs" / "configuration.md").read_text() == sync_docs.reference(), \
        "run `make docs`"
