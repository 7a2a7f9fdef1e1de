"""A whole deployment on one machine, for the deployment tests and benchmark: certificates,
a TLS SuperLink with node authentication and a state database, and one registered node per
institution, each in its own directory with only its own data file and its own port.

Every process is started through the ``fedsilo`` command, as a user would start it, in its
own process group; ``stop`` (and leaving the ``with`` block) ends them all, whatever
happened.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fedsilo.ports import free_port, port_open


def fedsilo(*args: str, cwd: Path, timeout: float = 600,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run one ``fedsilo`` command to its end."""
    return subprocess.run([sys.executable, "-m", "fedsilo.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


class Loopback:
    """``with Loopback(root, names) as lb:`` a running federation of ``names``."""

    def __init__(self, root: Path, institutions: list[str], data_dir: Path,
                 extra_keys: tuple[str, ...] = (), poll_s: float = 0.1,
                 cache_dir: Path | None = None, node_env: dict | None = None,
                 process_per_message: bool = False):
        self.root, self.institutions, self.data_dir = root, list(institutions), data_dir
        self.extra_keys, self.poll_s, self.cache_dir = extra_keys, poll_s, cache_dir
        self.node_env = node_env or {}
        self.process_per_message = process_per_message
        self.env = dict(os.environ, HF_HUB_OFFLINE="1")
        self.port = free_port()
        self.link = f"localhost:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.nodes: dict[str, subprocess.Popen] = {}

    # -- set-up --------------------------------------------------------------------------
    def __enter__(self) -> Loopback:
        try:
            self._check(fedsilo("certs", "certs", "--superlink-host", "localhost", "--nodes",
                                ",".join([*self.institutions, *self.extra_keys]),
                                cwd=self.root, env=self.env))
            self.start(["superlink", "--certs", "../certs", "--port", str(self.port),
                        "--database", "state.db"], self.root / "superlink")
            self.wait_for(lambda: port_open(self.port), 60, "the SuperLink")
            for name in self.institutions:  # extra keys are made, not registered
                self.register(name)
            for name in self.institutions:
                self.start_node(name, self.data_dir / f"{name}.csv")
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def register(self, name: str) -> None:
        self._check(fedsilo("register", f"certs/nodes/{name}.pub", "--name", name,
                            "--superlink", self.link, "--ca", "certs/ca.crt", cwd=self.root,
                            env=self.env))

    def host(self, name: str) -> Path:
        """The directory of ``name``'s host: only its own file is there."""
        return self.root / "hosts" / name

    def start_node(self, name: str, data: Path, key: str | None = None
                   ) -> subprocess.Popen:
        """A node for institution ``name`` on a copy of ``data`` in its own directory."""
        home = self.host(name)
        home.mkdir(parents=True, exist_ok=True)
        if data != home / "messages.csv":
            (home / "messages.csv").write_bytes(Path(data).read_bytes())
        cache = (self.cache_dir / "nodes" / name) if self.cache_dir else home / ".cache"
        args = ["node", "--superlink", self.link, "--ca", "../../certs/ca.crt", "--key",
                f"../../certs/nodes/{key or name}", "--institution", name, "--data",
                "messages.csv", "--port", str(free_port()), "--poll", str(self.poll_s),
                "--cache-dir", str(cache)]
        if self.process_per_message:
            args.append("--process-per-message")
        node_env = {k: v.replace("{host}", str(home)) for k, v in self.node_env.items()}
        proc = self.start(args, home, env=dict(self.env, **node_env))
        self.nodes[name] = proc
        return proc

    def start(self, args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
        cwd.mkdir(parents=True, exist_ok=True)
        with (cwd / "process.log").open("a") as log:
            proc = subprocess.Popen([sys.executable, "-m", "fedsilo.cli", *args], cwd=cwd,
                                    env=env or self.env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    # -- use -----------------------------------------------------------------------------
    def submit(self, config: Path, sets: list[str], timeout: float = 900
               ) -> subprocess.CompletedProcess:
        args = ["submit", str(config), "--superlink", self.link, "--ca", "certs/ca.crt"]
        for item in sets:
            args += ["--set", item]
        return fedsilo(*args, cwd=self.root, timeout=timeout, env=self.env)

    @staticmethod
    def wait_for(predicate, timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return
            time.sleep(0.3)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")

    # -- tear-down -----------------------------------------------------------------------
    def stop(self, proc: subprocess.Popen | None = None) -> None:
        """Stop one process group (or all): SIGTERM, then SIGKILL after 20 s."""
        for p in [proc] if proc is not None else list(reversed(self.procs)):
            if p.poll() is None:
                _signal_group(p, signal.SIGTERM)
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    _signal_group(p, signal.SIGKILL)
                    p.wait(timeout=10)
            _signal_group(p, signal.SIGKILL)  # whatever the group left behind

    @staticmethod
    def _check(out: subprocess.CompletedProcess) -> None:
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(out.args[3:5])} failed: {out.stderr.strip()}")


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
