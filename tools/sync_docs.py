"""Regenerate what is derived from fedsilo.config: docs/configuration.md (every key, its
default and meaning) and the [tool.flwr.app.config] table of pyproject.toml (every key of
the scenario, and the ``run.*`` facts a launcher passes beside it: fedsilo.facts). Run
with `make docs`; tests check both."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import tomli_w

from fedsilo import config
from fedsilo.facts import RunFacts

ROOT = Path(__file__).resolve().parents[1]
HEADER = """# Configuration reference

Every key of a scenario, its default and its meaning. A scenario file (`configs/*.toml`)
holds only what differs from these defaults; `--set KEY=VALUE` overrides one key (the value
is read as TOML). `fedsilo keys` prints the same list; this page is generated from
`src/fedsilo/config.py` by `make docs`, and a test keeps the two equal.

"""


def reference() -> str:
    """The whole page, from the code."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for key, default, help_text in config.describe():
        lines.append(f"| `{key}` | `{config.shown(default)}` | {help_text} |")
    return HEADER + "\n".join(lines) + "\n"


def main() -> None:
    (ROOT / "docs" / "configuration.md").write_text(reference())
    pyproject = ROOT / "pyproject.toml"
    text = pyproject.read_text()
    marker = "[tool.flwr.app.config.scenario]"
    flwr = tomli_w.dumps({"tool": {"flwr": {"app": {
        "config": {**dataclasses.asdict(config.Scenario()),
                   "run": dataclasses.asdict(RunFacts())}}}}})
    pyproject.write_text(text[:text.index(marker)] + flwr[flwr.index(marker):])


if __name__ == "__main__":
    main()
