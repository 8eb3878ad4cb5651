"""What a user writes, as a type checker sees it: nodeup's names and types check clean."""

import asyncio
from typing import List

import nodeup
from nodeup import MultiStepDeployment, ScriptDeployment, SSHKeyDeployment


def provision(public_key: str) -> nodeup.Node:
    steps = MultiStepDeployment([SSHKeyDeployment(public_key), ScriptDeployment("echo hi", args=["a"], timeout=30)])
    node = nodeup.deploy_node(
        provider="local",
        name="web-1",
        image="debian",
        deploy=steps,
        ssh_key="id_ed25519",
        ssh_port=22,
        timeout=300,
        on_output=lambda node, stream, line: print(node, stream, line),
    )
    script = steps.steps[1]
    assert isinstance(script, ScriptDeployment)
    status: "int | None" = script.exit_status
    print(status, node.public_ips[0])
    return node


def hosts() -> List[bool]:
    return [r.ok for r in nodeup.run(["10.0.0.1", "10.0.0.2"], ScriptDeployment("uptime"), parallel=10)]


async def both() -> List[nodeup.Node]:
    return list(await asyncio.gather(nodeup.deploy_node_async(name="a", deploy=ScriptDeployment("true"))))


def handle() -> None:
    try:
        provision("ssh-ed25519 AAAA")
    except nodeup.DeploymentError as error:
        print(error.node, error.step, error.stdout, error.exit_status)
