"""``fedsilo node``: one institution's node, as one long-lived process.

It starts Flower's SuperNode (``--isolation process``, polling the SuperLink every
``poll_s``) as a child and serves the SuperNode's ClientApp tasks itself: torch, the model,
the institution's data and its feature cache are loaded once and stay in memory, where
Flower's default would start a fresh ``flwr-clientapp`` process for every message. It runs
only fedsilo's installed ClientApp, whatever app a run names: the node never executes code
that comes from the server. Ctrl-C or SIGTERM stops both; if the SuperNode ends (refused by
the SuperLink, say), the node says why in one line and exits 1.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque

CLIENT_APP = "clients.app:app"
REFUSALS = (
    ("code: 2004", "the SuperLink refused this node: its key is not registered (register "
                   "the public key with `fedsilo register KEY.pub --name INSTITUTION ...`)"),
    ("code: 2001", "the SuperLink accepts registered nodes only: start the node with --key "
                   "and register its public key with `fedsilo register`"),
    ("code: 302", "the node's private key (--key) is not an EC key in OpenSSH format"),
    ("certificate verify failed", "the SuperLink's certificate is not signed by --ca, or "
                                  "not issued for the name in --superlink"),
)


def serve(flower_args: list[str], env: dict[str, str], port: int, poll_s: float,
          institution: str) -> int:
    """Run the SuperNode and serve its ClientApp tasks until stopped; the exit code."""
    from fedsilo.flower_compat import fab_components, serve_clientapp_tasks

    proc = subprocess.Popen([sys.executable, "-m", "fedsilo.deploy.supernode", "--poll",
                             str(poll_s), "--", *flower_args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    tail: deque[str] = deque(maxlen=40)
    threading.Thread(target=_echo, args=(proc, tail), daemon=True).start()
    stopping = threading.Event()

    def stop(signum, _frame):
        stopping.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    try:
        if _wait_for_port(port, proc, stopping):
            app = _load(CLIENT_APP)
            print(f"fedsilo node: serving institution '{institution}' (ClientApp loaded "
                  f"once, in process {os.getpid()})", flush=True)

            def accept(fab) -> str | None:
                asked = fab_components(fab).get("clientapp")
                return None if asked == CLIENT_APP else (
                    f"this node runs only fedsilo's ClientApp ({CLIENT_APP}); the run "
                    f"asked for {asked!r}")

            serve_clientapp_tasks(f"127.0.0.1:{port}", app,
                                  lambda: stopping.is_set() or proc.poll() is not None,
                                  poll_s=poll_s, accept=accept)
    finally:
        ended = proc.poll()
        if ended is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if stopping.is_set():
        return 0
    print(f"fedsilo node: the SuperNode of '{institution}' stopped: {_why(tail)}",
          file=sys.stderr, flush=True)
    return 1


def _echo(proc: subprocess.Popen, tail: deque) -> None:
    for line in proc.stdout:
        tail.append(line.rstrip("\n"))
        sys.stdout.write(line)
        sys.stdout.flush()


def _wait_for_port(port: int, proc: subprocess.Popen, stopping: threading.Event) -> bool:
    """Until the SuperNode's runtime API answers; False if it ended or we were stopped."""
    while not stopping.is_set() and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _load(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def _why(tail: deque) -> str:
    text = "\n".join(tail)
    for needle, reason in REFUSALS:
        if needle in text:
            return reason
    errors = [ln for ln in tail if "ERROR" in ln or "Error" in ln or "error" in ln]
    return (errors or list(tail) or ["no output"])[-1].strip()
