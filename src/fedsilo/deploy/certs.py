"""``fedsilo certs``: a certificate authority, the SuperLink's TLS certificate, and one
EC key pair per institution's node (for Flower's node authentication).

Files written to OUT_DIR (private keys with mode 0600):

    ca.crt  ca.key                 the CA (give ca.crt to every node and to whoever submits)
    superlink.crt  superlink.key   the SuperLink's certificate, with every name nodes use
                                   plus 127.0.0.1 and localhost (Flower's own launcher on
                                   the SuperLink host connects there)
    nodes/<name>  nodes/<name>.pub the node's OpenSSH EC key pair: the private key stays on
                                   the node, the public key is registered with the SuperLink

Everything is written to a temporary directory first and moved into place at the end, so a
failure leaves nothing half-written.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import shutil
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedsilo.config import ConfigError

ALWAYS = ["127.0.0.1", "localhost"]
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def make_certs(out_dir: Path, hosts: list[str], nodes: list[str], days: int = 825) -> dict:
    """Write the CA, the SuperLink certificate for ``hosts`` and a key pair per node;
    return the paths written."""
    _check(out_dir, hosts, nodes)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP384R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedsilo federation CA")])
        ca = (_builder(ca_name, ca_name, ca_key.public_key(), now, days)
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                           False, False), critical=True)
              .sign(ca_key, hashes.SHA384()))
        link_key = ec.generate_private_key(ec.SECP384R1())
        names = list(dict.fromkeys([*hosts, *ALWAYS]))
        link = (_builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]),
                         ca_name, link_key.public_key(), now, days)
                .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                               critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                               critical=False)
                .sign(ca_key, hashes.SHA384()))
        _write(tmp / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))
        _write(tmp / "ca.key", _pem(ca_key), private=True)
        _write(tmp / "superlink.crt", link.public_bytes(serialization.Encoding.PEM))
        _write(tmp / "superlink.key", _pem(link_key), private=True)
        (tmp / "nodes").mkdir()
        for node in nodes:
            key = ec.generate_private_key(ec.SECP384R1())
            _write(tmp / "nodes" / node, key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                serialization.NoEncryption()), private=True)
            _write(tmp / "nodes" / f"{node}.pub", key.public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
                + f" {node}\n".encode())
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked): replaced by the complete set
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"ca": out_dir / "ca.crt", "superlink_cert": out_dir / "superlink.crt",
            "superlink_key": out_dir / "superlink.key", "names": names,
            "nodes": {n: (out_dir / "nodes" / n, out_dir / "nodes" / f"{n}.pub")
                      for n in nodes}}


def _check(out_dir: Path, hosts: list[str], nodes: list[str]) -> None:
    if not hosts:
        raise ConfigError("--superlink-host: give the name or address nodes use to reach "
                          "the SuperLink")
    if not nodes:
        raise ConfigError("--nodes: name at least one institution, e.g. --nodes "
                          "bank-a,hospital-b")
    bad = [n for n in nodes if not NAME.match(n)]
    if bad:
        raise ConfigError(f"--nodes: {bad[0]!r} is not a usable name (letters, digits, "
                          f"'.', '_' and '-')")
    if len(set(nodes)) != len(nodes):
        raise ConfigError("--nodes: a name is given twice")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"OUT_DIR: '{out_dir}' already exists and is not empty; choose a "
                          f"new directory (keys are never overwritten)")
    parent = out_dir.parent if out_dir.parent != Path("") else Path(".")
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise ConfigError(f"OUT_DIR: cannot write under '{probe}'")


def _builder(subject, issuer, public_key, now, days: int) -> x509.CertificateBuilder:
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public_key).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
