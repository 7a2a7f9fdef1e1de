"""The deployment commands of ``fedsilo``: certs, split, superlink, register, node, submit.

    fedsilo certs OUT_DIR --superlink-host NAME_OR_IP... --nodes bank-a,hospital-b,...
    fedsilo split [CONFIG] OUT_DIR           each institution's rows as its own CSV file
    fedsilo superlink --certs DIR [--host 0.0.0.0] [--port 8000] [--database FILE]
    fedsilo register KEY.pub --name NAME --superlink HOST:PORT --ca ca.crt
    fedsilo node --superlink HOST:PORT --ca ca.crt --key KEY --institution NAME --data FILE
    fedsilo submit [CONFIG] --superlink HOST:PORT --ca ca.crt [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fedsilo import config
from fedsilo.config import ConfigError
from fedsilo.deploy import commands


def add_parsers(sub, scenario_args) -> None:
    """Add the deployment subcommands to the ``fedsilo`` parser."""
    p = sub.add_parser("certs", help="make a CA, the SuperLink's TLS certificate and one "
                       "key pair per institution's node")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    p.add_argument("--superlink-host", nargs="+", required=True, metavar="NAME_OR_IP",
                   help="every name or address nodes use to reach the SuperLink")
    p.add_argument("--nodes", required=True, metavar="NAME,NAME",
                   help="the institutions, comma-separated: one key pair each")

    p = sub.add_parser("split", help="write each institution's rows of a scenario to its "
                       "own CSV file (to try a deployment on one machine)")
    scenario_args(p)
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR")

    p = sub.add_parser("superlink", help="start Flower's SuperLink with TLS, node "
                       "authentication and a state database")
    _tls_args(p, certs=True)
    p.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    p.add_argument("--port", type=int, default=commands.DEFAULT_PORT)
    p.add_argument("--database", type=Path, default=Path("superlink.db"),
                   help="the SuperLink's state (runs, registered nodes), kept across "
                   "restarts (default: superlink.db here)")
    p.add_argument("--flwr-home", type=Path, default=Path(".flwr"),
                   help="Flower's home for this process (default: .flwr here)")
    p.add_argument("--print", action="store_true", help="print the command, do not run it")

    p = sub.add_parser("register", help="register a node's public key with the SuperLink "
                       "under its institution's name")
    p.add_argument("public_key", type=Path, metavar="KEY.pub")
    p.add_argument("--name", required=True, help="the institution this key belongs to")
    _link_args(p)

    p = sub.add_parser("node", help="start Flower's SuperNode for one institution, on its "
                       "own data file")
    _link_args(p)
    p.add_argument("--key", type=Path, help="the node's private key (fedsilo certs' "
                   "nodes/<name>), registered with `fedsilo register`")
    p.add_argument("--institution", required=True)
    p.add_argument("--kind", choices=("bank", "hospital"))
    p.add_argument("--data", type=Path, required=True, help="this institution's own file "
                   "(CSV, JSONL, Parquet or a saved Hugging Face dataset)")
    p.add_argument("--port", type=int, default=commands.NODE_PORT,
                   help="the node's local runtime API (two nodes on one host: two ports)")
    p.add_argument("--cache-dir", type=Path, default=Path(".fedsilo-cache"),
                   help="the node's own feature cache (default: .fedsilo-cache here)")
    p.add_argument("--flwr-home", type=Path, help="Flower's home for this process "
                   "(default: <cache-dir>/flwr)")
    p.add_argument("--poll", type=float, default=0.5, metavar="SECONDS",
                   help="how often the node asks the SuperLink for work (Flower: 3 s)")
    p.add_argument("--process-per-message", action="store_true",
                   help="Flower's default: a fresh ClientApp process for every message "
                   "(slower; runs whatever ClientApp the run names)")
    p.add_argument("--print", action="store_true", help="print the command, do not run it")

    p = sub.add_parser("submit", help="run a scenario on a deployed federation, wait for the "
                       "outcome and write the run directory here")
    scenario_args(p)
    _link_args(p)
    p.add_argument("--verbose", action="store_true", help="show Flower's own log lines")


def _tls_args(p: argparse.ArgumentParser, certs: bool = False) -> None:
    group = p.add_mutually_exclusive_group(required=True)
    if certs:
        group.add_argument("--certs", type=Path, help="the directory `fedsilo certs` wrote")
    else:
        group.add_argument("--ca", type=Path, help="the federation's CA certificate (ca.crt)")
    group.add_argument("--insecure", action="store_true", help="plain HTTP, no node "
                       "authentication: for trying things on one machine only")


def _link_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--superlink", required=True, metavar="HOST:PORT")
    _tls_args(p)


def cmd_certs(args: argparse.Namespace) -> int:
    from fedsilo.deploy.certs import make_certs

    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()]
    made = make_certs(args.out_dir, args.superlink_host, nodes)
    print(f"wrote {args.out_dir}/: ca.crt, superlink.crt (for {', '.join(made['names'])}), "
          f"and a key pair per node under nodes/ ({', '.join(nodes)}); private keys are "
          f"mode 0600")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from fedsilo.data.federation import export_institutions

    s = config.load(args.config, args.overrides)
    paths = export_institutions(s, args.out_dir)
    print(f"wrote {len(paths)} files to {args.out_dir}/: "
          + ", ".join(p.name for p in paths))
    return 0


def cmd_superlink(args: argparse.Namespace) -> int:
    certs = None if args.insecure else _existing(args.certs, "--certs", directory=True)
    cmd = commands.superlink_command(certs, args.host, args.port, args.database.resolve())
    return _exec(cmd, commands.flower_env(args.flwr_home.resolve()), args.print)


def cmd_register(args: argparse.Namespace) -> int:
    from fedsilo import flower_compat

    key = _existing(args.public_key, "KEY.pub")
    client = flower_compat.control_client(args.superlink, _ca(args))
    try:
        node_id = flower_compat.register_node(client, key.read_bytes(), args.name)
    except ValueError as exc:
        raise ConfigError(f"KEY.pub: '{key}' is not an OpenSSH EC public key ({exc})") \
            from None
    except Exception as exc:  # noqa: BLE001 - the SuperLink's reason, in one line
        reason = flower_compat.flower_error(exc) or str(exc).strip().splitlines()[-1]
        print(f"fedsilo: the SuperLink at {args.superlink} did not register '{key}': "
              f"{reason}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"registered {key} as '{args.name}' (node id {node_id})")
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    from fedsilo.deploy.worker import serve

    data = _existing(args.data, "--data")
    ca = None if args.insecure else _existing(args.ca, "--ca")
    key = None if args.key is None else _existing(args.key, "--key")
    if args.poll <= 0:
        raise ConfigError(f"--poll: must be > 0 seconds, got {args.poll}")
    cache = args.cache_dir.resolve()
    isolation = "subprocess" if args.process_per_message else "process"
    cmd = commands.supernode_command(args.superlink, args.institution, data.resolve(),
                                     None if ca is None else ca.resolve(),
                                     None if key is None else key.resolve(), args.kind,
                                     args.port, cache, isolation=isolation)
    env = commands.flower_env((args.flwr_home or cache / "flwr").resolve())
    if args.print or args.process_per_message:
        return _exec(cmd, env, args.print)
    probe_superlink(args.superlink, ca)
    print(commands.shell(cmd), flush=True)
    Path(env["FLWR_HOME"]).mkdir(parents=True, exist_ok=True)
    return serve(cmd[1:], env, args.port, args.poll, args.institution)


def probe_superlink(superlink: str, ca: Path | None) -> None:
    """Fail at once when TLS cannot work (a plain node against a TLS SuperLink waits
    forever in Flower); say so and go on when the SuperLink is not up yet."""
    import httpx

    scheme = "http" if ca is None else "https"
    try:
        httpx.get(f"{scheme}://{superlink}/health", verify=str(ca) if ca else False,
                  timeout=5.0)
    except httpx.ConnectError as exc:
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) or "certificate" in str(exc).lower():
            raise ConfigError(f"--ca: the SuperLink at {superlink} presented a certificate "
                              f"that '{ca}' does not verify for that name") from None
        print(f"fedsilo node: the SuperLink at {superlink} is not reachable yet; the node "
              f"keeps trying", file=sys.stderr, flush=True)
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        if ca is None:
            raise ConfigError(f"--insecure: the SuperLink at {superlink} speaks TLS; start "
                              f"the node with --ca (the federation's ca.crt)") from None
        raise ConfigError(f"--superlink: {superlink} did not answer as a SuperLink "
                          f"({type(exc).__name__})") from None
    except httpx.HTTPError:
        pass  # an HTTP answer of any kind: something listens there


def cmd_submit(args: argparse.Namespace) -> int:
    from fedsilo.deploy.submit import submit
    from fedsilo.runner import RunFailed

    s = config.load(args.config, args.overrides)
    ca = None if args.insecure else _existing(args.ca, "--ca")
    try:
        out = submit(s, args.superlink, ca, Path(s.simulation.cache_dir).resolve(),
                     verbose=args.verbose)
    except RunFailed as exc:
        print(f"fedsilo: run failed: {exc}", file=sys.stderr)
        return 1
    g = out.summary["final"]["global"]
    print(f"\nfinal ({out.summary['rounds']} rounds): accuracy {g['accuracy']:.3f}, "
          f"macro-F1 {g['macro_f1']:.3f}")
    print(f"results: {out.run_dir}/ (summary.json, metrics.jsonl, accuracy.png, head.npz)")
    return 0


def _ca(args) -> str | None:
    return None if args.insecure else str(_existing(args.ca, "--ca"))


def _existing(path: Path, flag: str, directory: bool = False) -> Path:
    ok = path.is_dir() if directory else path.is_file()
    if not ok:
        raise ConfigError(f"{flag}: '{path}' is not {'a directory' if directory else 'a file'}")
    return path


def _exec(cmd: list[str], env: dict[str, str], only_print: bool) -> int:
    """Print the Flower command, or replace this process with it."""
    print(commands.shell(cmd), flush=True)
    if only_print:
        return 0
    Path(env["FLWR_HOME"]).mkdir(parents=True, exist_ok=True)
    os.execvpe(cmd[0], cmd, env)
    return 1  # not reached


HANDLERS = {"certs": cmd_certs, "split": cmd_split, "superlink": cmd_superlink,
            "register": cmd_register, "node": cmd_node, "submit": cmd_submit}
