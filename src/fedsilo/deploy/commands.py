"""The exact Flower 1.41 command lines of a deployment, built in one place.

``fedsilo superlink`` and ``fedsilo node`` run these; docs/deployment.md shows them; a test
parses every one with the installed Flower's own argument parsers, so a Flower upgrade that
renames a flag fails in CI rather than on an institution's host.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DEFAULT_PORT = 8000  # the SuperLink's one HTTP(S) port: Fleet, Control and app runtime
NODE_PORT = 9094  # each SuperNode's local runtime API (two nodes on one host: two ports)


def flower_env(flwr_home: Path | None = None) -> dict[str, str]:
    """The environment Flower's processes run in: this Python's bin directory first (Flower
    starts its helper processes by name), no telemetry or update checks (no calls out), no
    dependency installation at run time (every host has fedsilo's environment already)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.update({"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1",
                "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
                "HF_HUB_OFFLINE": env.get("HF_HUB_OFFLINE", "1"),
                "TOKENIZERS_PARALLELISM": "false"})
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


def superlink_command(certs: Path | None, host: str = "0.0.0.0", port: int = DEFAULT_PORT,
                      database: Path | None = None, node_auth: bool = True) -> list[str]:
    """``flower-superlink`` with TLS from ``certs`` (fedsilo certs' directory) and node
    authentication; ``certs=None`` is plain HTTP without node authentication (loopback
    trials only)."""
    cmd = ["flower-superlink", "--host", host, "--port", str(port),
           "--disable-runtime-dependency-installation"]
    if certs is None:
        cmd.append("--insecure")
    else:
        cmd += ["--ssl-ca-certfile", str(certs / "ca.crt"),
                "--ssl-certfile", str(certs / "superlink.crt"),
                "--ssl-keyfile", str(certs / "superlink.key")]
        if node_auth:
            cmd.append("--enable-supernode-auth")
    if database is not None:
        cmd += ["--database", str(database)]
    return cmd


def node_config(institution: str, data_path: Path, kind: str | None = None,
                cache_dir: Path | None = None) -> str:
    """The ``--node-config`` value: TOML values, strings quoted."""
    items = {"institution": institution, "kind": kind, "data-path": str(data_path),
             "cache-dir": None if cache_dir is None else str(cache_dir)}
    return " ".join(f'{k}="{_quoted(v)}"' for k, v in items.items() if v is not None)


def _quoted(value: str) -> str:
    if '"' in value or "\\" in value:
        raise ValueError(f"{value!r}: quotes and backslashes cannot travel in --node-config")
    return value


def supernode_command(superlink: str, institution: str, data_path: Path, ca: Path | None,
                      key: Path | None, kind: str | None = None, port: int = NODE_PORT,
                      cache_dir: Path | None = None, isolation: str = "subprocess"
                      ) -> list[str]:
    """``flower-supernode`` for one institution: its own data file in the node config, TLS
    against ``ca`` and the node's private key for authentication (``ca=None``: plain HTTP,
    loopback trials only)."""
    cmd = ["flower-supernode", "--superlink", superlink, "--port", str(port)]
    if ca is None:
        cmd.append("--insecure")
    else:
        cmd += ["--root-certificates", str(ca)]
    if key is not None:
        cmd += ["--auth-supernode-private-key", str(key)]
    if isolation != "subprocess":
        cmd += ["--isolation", isolation]
    cmd += ["--node-config", node_config(institution, data_path, kind, cache_dir)]
    return cmd


def shell(cmd: list[str]) -> str:
    """A command line as it is typed into a shell."""
    import shlex

    return " ".join(shlex.quote(part) for part in cmd)
