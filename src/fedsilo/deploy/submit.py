"""``fedsilo submit``: send a scenario to a SuperLink, follow it to the end, and write its
run directory on the submitting machine.

``flwr run`` returns as soon as the run is submitted and exits 0 whatever happens next.
``submit`` instead streams the ServerApp's log (progress lines shown as they come), polls
the run's status until it has finished, rebuilds the run directory from the records the
ServerApp streams (fedsilo.results.stream), and fails with the SuperLink's reason when the
run failed or was stopped. Ctrl-C stops the run on the SuperLink too.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from fedsilo import flower_compat
from fedsilo.config import ConfigError, Scenario
from fedsilo.console import shown
from fedsilo.data import shared_labels
from fedsilo.facts import RunFacts, run_config
from fedsilo.results.rundir import RunDirectory, final_name, new_run_dir
from fedsilo.results.stream import RunRebuilder
from fedsilo.runner import RunFailed, write_app_dir

FLOWER_LOG = (" INFO ", " WARNING ", " DEBUG ", "INFO :", "WARNING :", "DEBUG :", "ERROR :",
              "Successfully installed fedsilo-app")


@dataclass
class Submitted:
    run_id: int
    run_dir: Path
    summary: dict


def check_deployable(s: Scenario) -> None:
    """What a deployment needs the scenario to say, since no data lives with the server."""
    if not s.federation.institutions:
        raise ConfigError("config: 'federation.institutions' must name the institutions of a "
                          "deployment (the server waits for their nodes)")
    shared_labels(s)  # data.labels declared (or the synthetic label set)


def submit(s: Scenario, superlink: str, ca: Path | None, cache_dir: Path,
           poll_s: float = 1.0, verbose: bool = False) -> Submitted:
    """Run ``s`` on the federation behind ``superlink``; RunFailed if it did not complete."""
    from fedsilo.privacy import check_scenario
    from fedsilo.results.tracking import check_mlflow

    check_scenario(s)
    check_deployable(s)
    check_mlflow(s)
    if ca is not None and not Path(ca).is_file():
        raise ConfigError(f"--ca: '{ca}' is not a file")
    run_dir = new_run_dir(s).resolve()
    run_id = None
    with RunDirectory(run_dir) as rd:
        client = flower_compat.control_client(superlink, str(ca) if ca else None)
        try:
            run_id = _start(client, superlink, s, cache_dir)
            print(f"fedsilo: submitted run {run_id} to {superlink}; results in "
                  f"{shown(final_name(run_dir, failed=False))}", flush=True)
            (run_dir / "run.txt").write_text(f"superlink {superlink}\nrun_id {run_id}\n")
            rebuilt = _follow(client, run_id, run_dir, s, poll_s, verbose)
        except KeyboardInterrupt:
            if run_id is not None:
                flower_compat.stop_run(client, run_id)
                print(f"fedsilo: interrupted; run {run_id} stopped on the SuperLink",
                      flush=True)
            raise
        finally:
            client.close()
    from fedsilo.results.tracking import track

    track(rd.final, s)
    return Submitted(run_id, rd.final, rebuilt)


def _start(client, superlink: str, s: Scenario, cache_dir: Path) -> int:
    import httpx

    app_dir = write_app_dir(cache_dir)
    try:
        return flower_compat.start_run(client, str(app_dir),
                                       run_config(s, RunFacts(stream=True)))
    except httpx.RequestError as exc:
        raise RunFailed(f"cannot reach the SuperLink at {superlink}: "
                        f"{_reason(exc)}") from None
    except httpx.HTTPStatusError as exc:
        raise RunFailed(f"the SuperLink at {superlink} refused the run: "
                        f"{flower_compat.flower_error(exc)}") from None


def _follow(client, run_id: int, run_dir: Path, s: Scenario, poll_s: float,
            verbose: bool) -> dict:
    """Show the log and rebuild the run directory until the run has finished."""
    rebuilder = RunRebuilder(run_dir, plot=s.output.plot, tensorboard=s.output.tensorboard)
    after, pending = 0.0, ""
    while True:
        try:
            for text, stamp in flower_compat.stream_logs(client, run_id, after):
                after = max(after, stamp)
                pending += text
                *lines, pending = pending.split("\n")
                for line in lines:
                    if not rebuilder.feed(line) and (verbose or not _flower_line(line)):
                        print(line, flush=True)
        except Exception as exc:  # noqa: BLE001 - the stream broke: poll and resume
            if flower_compat.flower_error(exc) is None and not _transport(exc):
                raise
        status, sub, details = flower_compat.run_status(client, run_id)
        if status == "finished":
            break
        time.sleep(poll_s)
    if pending:
        rebuilder.feed(pending)
    if sub != "completed":
        raise RunFailed(f"run {run_id} finished as '{sub}'"
                        + (f": {details}" if details else ""))
    if not rebuilder.complete():
        raise RunFailed(f"run {run_id} completed but its records did not all arrive "
                        f"(the ServerApp's own run directory holds them)")
    summary = rebuilder.finish()
    names = s.federation.names()
    absent = [n for n in names if n not in summary["final"]["institutions"]]
    if absent and s.strategy.fraction_evaluate >= 1.0:
        raise RunFailed(f"no final evaluation from: {', '.join(absent)}")
    return summary


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _flower_line(line: str) -> bool:
    """Flower's own log lines (shown with --verbose)."""
    plain = ANSI.sub("", line)
    return any(tag in plain[:40] for tag in FLOWER_LOG) or not plain.strip()


def _transport(exc: Exception) -> bool:
    import httpx

    return isinstance(exc, httpx.TransportError)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__



