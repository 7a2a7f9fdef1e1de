"""Deployment pieces that need no process: command lines (parsed by Flower's own parsers),
certificates, the streamed records, a node's own data, the handshake's checks."""

from __future__ import annotations

import ipaddress
import re
import shlex
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from flwr.app import ConfigRecord, Message, RecordDict

from fedsilo import config
from fedsilo.config import ConfigError, Scenario
from fedsilo.deploy import commands
from fedsilo.flower_compat import parse_flower_command
from tests.conftest import ROOT

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
LABELS = "a,b,c"


# -- command lines ------------------------------------------------------------------------
def test_the_superlink_command_is_one_flower_accepts():
    args = parse_flower_command(commands.superlink_command(Path("certs"), port=18000,
                                                           database=Path("s.db")))
    assert (args["host"], args["port"], args["database"]) == ("0.0.0.0", 18000, "s.db")
    assert args["enable_supernode_auth"] and not args["insecure"]
    assert args["ssl_certfile"] == "certs/superlink.crt"
    assert args["runtime_dependency_install"] is False
    plain = parse_flower_command(commands.superlink_command(None))
    assert plain["insecure"] and not plain["enable_supernode_auth"]


def test_the_supernode_command_is_one_flower_accepts_with_the_node_config():
    cmd = commands.supernode_command("link:8000", "bank-a", Path("/srv/a b/data.csv"),
                                     Path("ca.crt"), Path("keys/bank-a"), kind="bank",
                                     port=9095, cache_dir=Path("/c"), isolation="process")
    args = parse_flower_command(cmd)
    assert (args["superlink"], args["port"], args["isolation"]) == ("link:8000", 9095,
                                                                   "process")
    assert args["root_certificates"] == "ca.crt"
    assert args["auth_supernode_private_key"] == "keys/bank-a"
    node = parse_flower_command(["flwr-node-config", args["node_config"]])
    assert node == {"institution": "bank-a", "kind": "bank",
                    "data-path": "/srv/a b/data.csv", "cache-dir": "/c"}


def test_flowers_parsers_refuse_a_renamed_flag():
    with pytest.raises(ValueError, match="--fleet-api"):
        parse_flower_command(["flower-supernode", "--fleet-api", "x:1"])
    with pytest.raises(ValueError, match="No such option"):
        parse_flower_command(["flwr", "supernode", "register", "k.pub", "--nme", "x"])


def _documented_commands(path: Path) -> list[list[str]]:
    """Every command line in a page's bash blocks (one per line)."""
    text = path.read_text()
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith(("flower-superlink ", "flower-supernode ", "flwr ",
                                "fedsilo ")):
                found.append(shlex.split(line.split(" > ")[0].replace("$n", "bank-1")
                                         .replace("$port", "9094")))
    return found


def test_every_command_in_the_deployment_docs_parses():
    from fedsilo.cli import parser

    cmds = _documented_commands(ROOT / "docs" / "deployment.md")
    progs = {c[0] for c in cmds}
    assert {"flower-superlink", "flower-supernode", "flwr", "fedsilo"} <= progs
    for cmd in cmds:
        if cmd[0] == "fedsilo":
            parser().parse_args(cmd[1:])
        else:
            parse_flower_command(cmd)


def test_the_documented_commands_are_the_ones_fedsilo_runs():
    """The SuperLink and SuperNode lines in the docs are what the wrappers print."""
    cmds = {c[0]: c for c in _documented_commands(ROOT / "docs" / "deployment.md")}
    link = commands.superlink_command(Path("certs"), port=8000,
                                      database=Path("/srv/fedsilo/superlink.db"))
    assert cmds["flower-superlink"] == link
    node = commands.supernode_command(
        "superlink.example.org:8000", "bank-a", Path("/srv/bank-a/messages.csv"),
        Path("/srv/bank-a/ca.crt"), Path("/srv/bank-a/bank-a"), kind="bank", port=9094,
        cache_dir=Path("/srv/bank-a/.fedsilo-cache"), isolation="process")
    assert cmds["flower-supernode"] == node


def test_a_node_config_value_with_a_quote_is_refused():
    with pytest.raises(ValueError, match="quotes"):
        commands.node_config("bank-a", Path('/x"y.csv'))


# -- certificates ---------------------------------------------------------------------------
def test_certs_make_a_ca_a_superlink_certificate_and_node_keys(tmp_path):
    from fedsilo.deploy.certs import make_certs

    out = tmp_path / "certs"
    make_certs(out, ["link.example.org", "10.0.0.5"], ["bank-a", "hospital-b"])
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    link = x509.load_pem_x509_certificate((out / "superlink.crt").read_bytes())
    ca.public_key().verify(link.signature, link.tbs_certificate_bytes,
                           __import__("cryptography.hazmat.primitives.asymmetric.ec",
                                      fromlist=["ECDSA"]).ECDSA(link.signature_hash_algorithm))
    san = link.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"link.example.org", "localhost"}
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("10.0.0.5"), ipaddress.ip_address("127.0.0.1")}
    for name in ("bank-a", "hospital-b"):
        key = serialization.load_ssh_private_key((out / "nodes" / name).read_bytes(), None)
        pub = serialization.load_ssh_public_key((out / "nodes" / f"{name}.pub").read_bytes())
        assert key.public_key().public_numbers() == pub.public_numbers()
    for private in (out / "ca.key", out / "superlink.key", out / "nodes" / "bank-a"):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600


def test_certs_never_overwrite_and_leave_nothing_half_written(tmp_path):
    from fedsilo.deploy.certs import make_certs

    out = tmp_path / "certs"
    out.mkdir()
    (out / "ca.key").write_text("precious")
    with pytest.raises(ConfigError, match="OUT_DIR: .* not empty"):
        make_certs(out, ["h"], ["bank-a"])
    assert (out / "ca.key").read_text() == "precious"
    with pytest.raises(ConfigError, match="--nodes: 'bad/name'"):
        make_certs(tmp_path / "other", ["h"], ["bad/name"])
    assert not (tmp_path / "other").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["certs"]  # no temporary left behind


# -- the streamed run directory -------------------------------------------------------------
def test_a_run_directory_is_rebuilt_from_the_streamed_lines(tmp_path, capsys):
    from fedsilo.results import stream

    arrays = {"head.out.weight": np.arange(60_000, dtype=np.float32).reshape(600, 100),
              "head.out.bias": np.ones(3, np.float32)}
    row = {"round": 1, "global": {"accuracy": 0.5}, "institutions": {}}
    summary = {"rounds": 1, "final": {"global": {"accuracy": 0.5}, "institutions": {}}}
    stream.emit("config", "name = 'x'\n")
    stream.emit("row", row)
    print("round   1/1  acc 0.500  (a progress line)")
    stream.emit("summary", summary)
    stream.emit_arrays(arrays)
    lines = capsys.readouterr().out.splitlines()
    assert sum(1 for ln in lines if '"kind": "arrays"' in ln) > 1  # in chunks
    rebuilt = stream.RunRebuilder(tmp_path, plot=False)
    shown = [ln for ln in lines if not rebuilt.feed(ln)]
    assert shown == ["round   1/1  acc 0.500  (a progress line)"]
    assert rebuilt.complete()
    assert rebuilt.finish() == summary
    with np.load(tmp_path / "head.npz") as z:
        for k, v in arrays.items():
            np.testing.assert_array_equal(z[k], v)
    assert (tmp_path / "config.toml").read_text() == "name = 'x'\n"
    assert (tmp_path / "metrics.jsonl").read_text().strip() == __import__("json").dumps(row)


# -- a node's own data ----------------------------------------------------------------------
def _file(tmp_path: Path, rows: dict, name="own.csv") -> Path:
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _node(s: Scenario, path: Path, **extra):
    from fedsilo.node.silo import resolve_institution

    return resolve_institution(s, {"institution": "bank-a", "data-path": str(path), **extra})


def test_a_node_reads_its_own_file_with_the_declared_labels(tmp_path):
    path = _file(tmp_path, {"text": [f"t{i}" for i in range(40)],
                            "label": ["b", "a"] * 20})
    s = Scenario().replace(**{"data.labels": LABELS, "data.source": "/nowhere.csv"})
    labels, inst = _node(s, path)
    assert labels == ("a", "b", "c") and inst.kind == "bank"  # from the name
    assert len(inst.train_texts) + len(inst.test_texts) == 40
    assert set(inst.train_labels) <= {0, 1}  # ids in the declared order


@pytest.mark.parametrize("rows,extra,sets,match", [
    ({"text": ["x"] * 20, "label": ["a"] * 19 + ["zz"]}, {}, {},
     r"data.labels: '.*own.csv' has label 'zz', which data.labels does not declare"),
    ({"text": ["x"] * 20, "label": ["a"] * 20, "institution": ["bank-a"] * 19 + ["bank-b"]},
     {}, {}, r"data-path: '.*own.csv' holds rows of other institutions \(bank-b\)"),
    ({"text": ["x"] * 20, "label": ["a"] * 20}, {}, {"data.labels": ""},
     r"data.labels: a deployed node needs the federation's label set"),
    ({"text": ["x"] * 20, "label": ["a"] * 20}, {"kind": "shop"}, {},
     r"kind must be 'bank' or 'hospital'"),
    ({"txt": ["x"] * 20, "label": ["a"] * 20}, {}, {}, r"data.text_column: column 'text'"),
])
def test_a_bad_node_file_is_one_clear_error(tmp_path, rows, extra, sets, match):
    s = Scenario().replace(**{"data.labels": LABELS, **sets})
    with pytest.raises(ConfigError, match=match):
        _node(s, _file(tmp_path, rows), **extra)


def test_a_missing_node_file_and_an_unknown_node_key_are_named(tmp_path):
    s = Scenario().replace(**{"data.labels": LABELS})
    with pytest.raises(ConfigError, match="data-path: file '.*nope.csv' does not exist"):
        _node(s, tmp_path / "nope.csv")
    with pytest.raises(ConfigError, match="unknown key 'data_path'"):
        _node(s, tmp_path / "x.csv", data_path="x")


# -- the handshake ------------------------------------------------------------------------
class Node:
    def __init__(self, node_id, name):
        self.node_id, self.name = node_id, name


class HandshakeGrid:
    """Nodes that answer the handshake with ``claims``; ``registered`` are the names the
    SuperLink knows them by; ``later`` connect on the second poll."""

    def __init__(self, claims: dict[int, str], registered=None, later=()):
        self.claims, self.registered, self.later = claims, registered or {}, set(later)
        self.polls = 0
        self.pending: dict[str, Message] = {}

    def get_node_ids(self):
        self.polls += 1
        return [n for n in self.claims if n not in self.later or self.polls > 1]

    def get_nodes(self):
        return [Node(n, self.registered.get(n, "")) for n in self.get_node_ids()]

    def push_messages(self, msgs):
        for i, m in enumerate(msgs):
            name = self.claims[m.metadata.dst_node_id]
            info = ConfigRecord({"institution": name, "kind": "bank", "num-train": 5,
                                 "num-test": 2})
            key = f"{self.polls}-{i}"
            m.metadata.__dict__["_message_id"] = key
            self.pending[key] = Message(RecordDict({"info": info}), reply_to=m)
        return list(self.pending)

    def pull_messages(self, ids):
        out = [self.pending.pop(i) for i in list(ids) if i in self.pending]
        return out


def _shake(grid, **sets):
    from fedsilo.facts import RunFacts, expected_institutions
    from server.handshake import handshake

    s = Scenario().replace(**{"federation.wait_s": 1.0, **sets})
    return handshake(grid, s, *expected_institutions(s, RunFacts()), poll_s=0.05)


@pytest.fixture
def identity(flower_identity):
    return flower_identity


def test_the_handshake_waits_for_late_nodes_and_orders_the_roster_by_name(identity):
    grid = HandshakeGrid({7: "hospital-1", 3: "bank-2", 9: "bank-1"}, later=[9])
    roster = _shake(grid, **{"federation.institutions": "bank-1,bank-2,hospital-1"})
    assert [i["institution"] for i in roster.values()] == ["bank-1", "bank-2", "hospital-1"]


def test_the_handshake_names_the_institution_that_never_connected(identity):
    from strategies import ClientFailure

    grid = HandshakeGrid({3: "bank-1"})
    with pytest.raises(ClientFailure, match="no node of institution 'bank-2' connected "
                                            "within federation.wait_s = 1 s"):
        _shake(grid, **{"federation.institutions": "bank-1,bank-2"})


@pytest.mark.parametrize("claims,registered,match", [
    ({3: "bank-1", 4: "bank-1"}, {}, r"two nodes \(3, 4\) serve the same institution"),
    ({3: "bank-1", 4: "bank-9"}, {}, "serves institution 'bank-9', which federation"),
    ({3: "bank-1", 4: "bank-2"}, {4: "bank-1"},
     "node 4 is registered as 'bank-1' but claims institution 'bank-2'"),
])
def test_the_handshake_refuses_a_false_claim(identity, claims, registered, match):
    from strategies import ClientFailure

    with pytest.raises(ClientFailure, match=match):
        _shake(HandshakeGrid(claims, registered),
               **{"federation.institutions": "bank-1,bank-2"})


def test_a_natural_split_of_a_file_needs_the_institutions_named():
    from fedsilo.facts import RunFacts, expected_institutions
    from server.handshake import handshake

    s = Scenario().replace(**{"data.source": "x.csv"})
    assert expected_institutions(s, RunFacts()) == ([], None)
    with pytest.raises(ConfigError, match="'federation.institutions' must name"):
        handshake(HandshakeGrid({}), s, [], None)
    assert expected_institutions(config.Scenario(), RunFacts()) == ([], 5)
    # a simulation's launcher found them in the data
    found = RunFacts(institutions="a,b")
    assert expected_institutions(s, found) == (["a", "b"], 2)

