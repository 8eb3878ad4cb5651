"""The test bed of the Python package's tests: nodeup's local provider (real sshd in a sandbox, as
root) under a state directory of its own, a client key, and a check that every test leaves no
node behind.

The state directory is made under the Rust test bed's root with an ``owner`` file, so that should
this process die, the next test run's sweep destroys what it left."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, List

import pytest

import nodeup

# The Rust test bed's root (testbed::TESTBED_ROOT): its sweep removes what dead owners left.
TESTBED_ROOT = Path("/tmp/nodeup-testbed")


def _start_time(pid: int) -> int:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat), as the sweep reads it."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


class Bed:
    """One test's state directory, client key and known_hosts."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.key = root / "id_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "pytest", "-f", str(self.key)], check=True)
        self.public_key = (root / "id_ed25519.pub").read_text().strip()
        self.known_hosts = root / "known_hosts"

    def new_key(self, name: str) -> Path:
        """Another key pair, for a step to authorize."""
        path = self.root / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True)
        return path

    def ssh(self, node: nodeup.Node, command: str, key: "Path | None" = None, user: str = "root") -> subprocess.CompletedProcess:
        """OpenSSH's client running ``command`` on the node, host key checked against nodeup's."""
        return subprocess.run(
            [
                "ssh",
                "-F",
                "none",
                "-i",
                str(key or self.key),
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                f"UserKnownHostsFile={self.root / 'state' / 'known_hosts'}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-p",
                str(node.extra.get("ssh_port", 22)),
                f"{user}@{node.public_ips[0]}",
                command,
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def nodes(self) -> List[nodeup.Node]:
        return nodeup.list_nodes("local")


@pytest.fixture
def bed(monkeypatch: pytest.MonkeyPatch) -> Iterator[Bed]:
    """A state directory of the test's own (nodes, known_hosts, journal) with HOME pointed at it,
    so that nothing of the machine's own ~/.ssh is read; at the end every node left is destroyed
    and the test fails if there was one."""
    TESTBED_ROOT.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="pytest-", dir=TESTBED_ROOT))
    (root / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}\n")
    monkeypatch.setenv("NODEUP_STATE_DIR", str(root / "state"))
    monkeypatch.setenv("HOME", str(root))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.delenv("NODEUP_JOURNAL", raising=False)
    bed = Bed(root)
    try:
        yield bed
    finally:
        left = nodeup.list_nodes("local")
        for node in left:
            nodeup.destroy_node("local", node)
        shutil.rmtree(root, ignore_errors=True)
        assert not left, f"the test left nodes behind: {left}"
