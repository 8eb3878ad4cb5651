"""The Python side of ``cargo bench --bench python``: one way of deploying the same three steps
(append a key, upload a file, run a script) on every host of a list, timed from inside the
interpreter so that its start and imports (measured apart by the bench) do not count.

    python python_deploy.py MODE HOSTS KNOWN_HOSTS KEY PUBLIC_KEY PAYLOAD SCRIPT RESULT

MODE is one of:
  run       ``nodeup.run(hosts, steps, parallel=len(hosts))``: what ``nodeup run`` does, from Python
  drop-in   ``nodeup.libcloud.deploy_node(driver, ...)`` per host in a pool of threads, with
            Libcloud's own deployment classes
  libcloud  Libcloud's ``driver.deploy_node(...)`` (paramiko) per host in a pool of threads

The Libcloud driver of the last two makes no machine: its ``create_node`` hands out the next host
of the list, already running, so that both spend their time on the SSH part alone; each deployment
uploads to a path of its own (the hosts are one sshd). RESULT gets
``{"wall": s, "cpu": s, "ok": bool}`` for the timed part.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Tuple

TARGET = "/tmp/payload.bin"


def hosts_of(path: str) -> List[Tuple[str, int]]:
    """``root@127.0.0.1:PORT`` lines as (address, port)."""
    hosts = []
    for line in open(path):
        line = line.strip()
        if line:
            address, port = line.split("@", 1)[1].rsplit(":", 1)
            hosts.append((address, int(port)))
    return hosts


def libcloud_steps(public: str, payload: str, script: str, target: str) -> Any:
    from libcloud.compute import deployment as lc

    return lc.MultiStepDeployment(
        [lc.SSHKeyDeployment(public), lc.FileDeployment(payload, target), lc.ScriptDeployment(script)]
    )


def pool_driver(hosts: List[Tuple[str, int]]) -> Any:
    """A Libcloud driver whose nodes are the hosts of the list, handed out by name."""
    from libcloud.compute.base import Node, NodeDriver
    from libcloud.compute.types import NodeState

    class PoolDriver(NodeDriver):  # type: ignore[misc]
        name = "pool of running hosts"
        type = "bench-pool"
        connectionCls = None

        def __init__(self) -> None:
            self.nodes: Dict[str, Node] = {}

        def create_node(self, name: str, **_kwargs: Any) -> Node:
            index = int(name.rsplit("-", 1)[1])
            node = Node(str(index), name, NodeState.RUNNING, [hosts[index][0]], [], self)
            self.nodes[node.id] = node
            return node

        def list_nodes(self) -> List[Node]:
            return list(self.nodes.values())

        def destroy_node(self, node: Node) -> bool:
            return self.nodes.pop(node.id, None) is not None

    return PoolDriver()


def nodeup_run(argv: List[str]) -> Callable[[], bool]:
    import nodeup

    hosts_file, known_hosts, key, public, payload, script = argv
    hosts = [f"root@{a}:{p}" for a, p in hosts_of(hosts_file)]
    steps = nodeup.MultiStepDeployment(
        [nodeup.SSHKeyDeployment(public), nodeup.FileDeployment(payload, TARGET), nodeup.ScriptDeployment(script)]
    )

    def go() -> bool:
        results = nodeup.run(hosts, steps, parallel=len(hosts), known_hosts=known_hosts, ssh_key=key)
        return all(r.ok for r in results)

    return go


def threads_of(argv: List[str], deploy_node: Callable[..., Any], **ssh: Any) -> Callable[[], bool]:
    """``deploy_node(driver, ...)`` for each host, in a pool of as many threads as hosts."""
    hosts_file, _known_hosts, key, public, payload, script = argv
    hosts = hosts_of(hosts_file)
    driver = pool_driver(hosts)

    def one(index: int) -> bool:
        # A file of its own per deployment: the hosts are one sshd, and paramiko's put checks the
        # size after writing, which another deployment's write to the same path can change.
        steps = libcloud_steps(public, payload, script, f"{TARGET}.{index}")
        deploy_node(
            driver, deploy=steps, name=f"bench-{index}", ssh_port=hosts[index][1], ssh_key=key, wait_period=0.1, **ssh
        )
        return steps.steps[-1].exit_status == 0

    def go() -> bool:
        with ThreadPoolExecutor(len(hosts)) as pool:
            return all(pool.map(one, range(len(hosts))))

    return go


def drop_in(argv: List[str]) -> Callable[[], bool]:
    import nodeup.libcloud

    return threads_of(argv, nodeup.libcloud.deploy_node, known_hosts=argv[1], host_key_policy="strict")


def libcloud(argv: List[str]) -> Callable[[], bool]:
    return threads_of(argv, lambda driver, **kwargs: driver.deploy_node(**kwargs))


MODES = {"run": nodeup_run, "drop-in": drop_in, "libcloud": libcloud}


def main() -> None:
    mode, result = sys.argv[1], sys.argv[-1]
    go = MODES[mode](sys.argv[2:-1])
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    ok = go()
    wall, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with open(result, "w") as out:
        json.dump({"wall": wall, "cpu": cpu, "ok": ok}, out)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
