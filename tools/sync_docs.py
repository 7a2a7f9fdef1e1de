"""Regenerate what is derived from fedsilo.config: the README's configuration reference and
the [tool.flwr.app.config] table of pyproject.toml. Run with `make docs`; tests check both."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import tomli_w

from fedsilo import config

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    table = subprocess.run([sys.executable, "-m", "fedsilo.cli", "keys", "--markdown"],
                           capture_output=True, text=True, check=True).stdout
    readme = ROOT / "README.md"
    text = readme.read_text()
    start = text.index("<!-- keys:start -->") + len("<!-- keys:start -->")
    readme.write_text(text[:start] + "\n" + table + text[text.index("<!-- keys:end -->"):])

    pyproject = ROOT / "pyproject.toml"
    text = pyproject.read_text()
    marker = "[tool.flwr.app.config.scenario]"
    flwr = tomli_w.dumps({"tool": {"flwr": {"app": {
        "config": dataclasses.asdict(config.Scenario())}}}})
    pyproject.write_text(text[:text.index(marker)] + flwr[flwr.index(marker):])


if __name__ == "__main__":
    main()
