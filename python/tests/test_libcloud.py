"""nodeup.libcloud.deploy_node: Libcloud drivers create, wait for and destroy the node, nodeup
does the SSH part. A small Libcloud driver over nodeup's local nodes makes the SSH part real;
Libcloud's DummyNodeDriver checks the argument handling."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from libcloud.compute import deployment as lc
from libcloud.compute.base import Node, NodeAuthSSHKey, NodeDriver, NodeImage, NodeSize
from libcloud.compute.drivers.dummy import DummyNodeDriver
from libcloud.compute.types import DeploymentException, NodeState

import nodeup
import nodeup.libcloud

from conftest import Bed

_STATES = {"running": NodeState.RUNNING, "pending": NodeState.PENDING, "terminated": NodeState.TERMINATED}


class LocalNodesDriver(NodeDriver):
    """A Libcloud driver whose nodes are nodeup's local nodes (real sshd), counting its calls."""

    name = "nodeup local nodes"
    type = "nodeup-local"
    connectionCls = None  # type: ignore[assignment]

    def __init__(self) -> None:
        self.calls: Dict[str, int] = {}

    def _count(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1

    def _node(self, node: nodeup.Node) -> Node:
        return Node(
            id=node.id,
            name=node.name,
            state=_STATES.get(node.state, NodeState.UNKNOWN),
            public_ips=node.public_ips,
            private_ips=node.private_ips,
            driver=self,
            extra=node.extra,
        )

    def list_nodes(self) -> List[Node]:
        self._count("list_nodes")
        return [self._node(n) for n in nodeup.list_nodes("local")]

    def create_node(self, name: str, size: Optional[NodeSize] = None, image: Optional[NodeImage] = None, auth: Any = None) -> Node:
        self._count("create_node")
        key = auth.pubkey if isinstance(auth, NodeAuthSSHKey) else None
        return self._node(nodeup.create_node("local", name, image=image.id if image else "debian", ssh_public_key=key))

    def destroy_node(self, node: Node) -> bool:
        self._count("destroy_node")
        return nodeup.destroy_node("local", node.id)


def test_libcloud_steps_run_through_nodeup_on_a_libcloud_driver(bed: Bed) -> None:
    driver = LocalNodesDriver()
    new_key = bed.new_key("deployer")
    source = bed.root / "app.conf"
    source.write_text("port = 8080\n")
    steps = lc.MultiStepDeployment(
        [
            lc.SSHKeyDeployment(Path(f"{new_key}.pub").read_text()),
            lc.FileDeployment(str(source), "/etc/app.conf"),
            lc.ScriptDeployment("cat /etc/app.conf; echo \"$1\"", args=["done"]),
        ]
    )
    node = nodeup.libcloud.deploy_node(
        driver, deploy=steps, name="lc-1", auth=NodeAuthSSHKey(bed.public_key), ssh_key=str(bed.key), wait_period=0.2
    )
    assert isinstance(node, Node) and node.name == "lc-1" and node.state == NodeState.RUNNING
    script = steps.steps[2]
    assert (script.stdout, script.stderr, script.exit_status) == ("port = 8080\ndone\n", "", 0)
    # The new key logs in, and the file is there with its content.
    login = bed.ssh(nodeup.get_node("local", node.id), "cat /etc/app.conf", key=new_key)
    assert (login.returncode, login.stdout) == (0, "port = 8080\n"), login.stderr
    assert driver.calls["create_node"] == 1 and "destroy_node" not in driver.calls
    driver.destroy_node(node)


def test_a_failing_libcloud_script_raises_libcloud_s_exception_and_the_driver_destroys_the_node(bed: Bed) -> None:
    driver = LocalNodesDriver()
    script = lc.ScriptDeployment("echo partial; exit 4")
    with pytest.raises(DeploymentException) as raised:
        nodeup.libcloud.deploy_node(driver, deploy=script, name="lc-fails", auth=NodeAuthSSHKey(bed.public_key), ssh_key=str(bed.key), wait_period=0.2)
    error = raised.value
    assert isinstance(error, nodeup.DeploymentError)
    assert isinstance(error.node, Node) and error.node.name == "lc-fails"
    assert (error.exit_status, error.stdout, error.fate) == (4, "partial\n", "destroyed")
    assert (script.stdout, script.exit_status) == ("partial\n", 4)
    assert driver.calls["destroy_node"] == 1
    assert bed.nodes() == []


def test_a_driver_method_that_raises_is_raised_with_the_node_cleaned_up(bed: Bed) -> None:
    class Broken(LocalNodesDriver):
        def wait_until_running(self, *args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("the API went away")

    driver = Broken()
    with pytest.raises(nodeup.DeploymentError, match="the API went away") as raised:
        nodeup.libcloud.deploy_node(driver, deploy=lc.ScriptDeployment("true"), name="lc-broken", ssh_key=str(bed.key))
    assert isinstance(raised.value.__cause__, ConnectionError)
    assert raised.value.__cause__.__traceback__ is not None
    assert driver.calls["destroy_node"] == 1
    assert bed.nodes() == []


def dummy_nodes(driver: DummyNodeDriver) -> List[str]:
    return sorted(n.name for n in driver.list_nodes())


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"ssh_port": "22"}, TypeError, "ssh_port"),
        ({"ssh_interface": "ipv6_ips"}, ValueError, "ssh_interface"),
        ({"wait_period": 0}, ValueError, "wait_period"),
        ({"timeout": "5m"}, TypeError, "timeout"),
        ({"ssh_alternate_usernames": "admin"}, TypeError, "ssh_alternate_usernames"),
        ({"at_exit_func": "destroy"}, TypeError, "at_exit_func"),
        ({"deploy": object()}, TypeError, "deploy"),
        ({"ssh_key": "/nonexistent/id_rsa"}, ValueError, "ssh_key='/nonexistent/id_rsa'"),
    ],
)
def test_bad_arguments_are_refused_before_the_driver_creates_anything(bed: Bed, kwargs, error, named) -> None:
    driver = DummyNodeDriver(0)
    before = dummy_nodes(driver)
    arguments: Dict[str, Any] = {"deploy": lc.ScriptDeployment("true"), "name": "x", "size": None, "image": None}
    arguments.update(kwargs)
    with pytest.raises(error, match=named):
        nodeup.libcloud.deploy_node(driver, **arguments)
    assert dummy_nodes(driver) == before


def test_a_libcloud_step_nodeup_cannot_run_is_refused_by_name(bed: Bed) -> None:
    class Custom(lc.Deployment):
        def run(self, node: Any, client: Any) -> Any:
            return node

    driver = DummyNodeDriver(0)
    with pytest.raises(TypeError, match="Custom is not a step nodeup runs"):
        nodeup.libcloud.deploy_node(driver, deploy=lc.MultiStepDeployment([lc.ScriptDeployment("true"), Custom()]), name="x", size=None, image=None)
    assert dummy_nodes(driver) == ["dummy-1", "dummy-2"]


def test_no_way_to_log_in_is_refused_before_the_driver_creates_anything(bed: Bed) -> None:
    driver = DummyNodeDriver(0)
    with pytest.raises(ValueError, match="no way to log in: give ssh_key"):
        nodeup.libcloud.deploy_node(driver, deploy=lc.ScriptDeployment("true"), name="x", size=None, image=None)
    with pytest.raises(ValueError, match="missing-key"):
        nodeup.libcloud.deploy_node(driver, deploy=lc.ScriptDeployment("true"), ssh_key=str(bed.root / "missing-key"), name="x", size=None, image=None)
    assert dummy_nodes(driver) == ["dummy-1", "dummy-2"]


def test_dummy_driver_create_node_arguments_pass_through_and_a_failed_login_destroys_the_node(bed: Bed) -> None:
    """DummyNodeDriver's nodes have no sshd (127.0.0.3, port 1 here): the login fails within the
    timeout, and the node is destroyed through the driver."""
    driver = DummyNodeDriver(0)
    with pytest.raises(DeploymentException) as raised:
        nodeup.libcloud.deploy_node(
            driver,
            deploy=lc.ScriptDeployment("true"),
            name=f"ignored-{uuid.uuid4().hex[:6]}",
            size=driver.list_sizes()[0],
            image=driver.list_images()[0],
            ssh_key=str(bed.key),
            ssh_port=1,
            timeout=2,
            wait_period=0.1,
        )
    assert raised.value.node.name == "dummy-3"
    assert "could not log in" in str(raised.value)
    assert raised.value.fate == "destroyed"
    assert dummy_nodes(driver) == ["dummy-1", "dummy-2"]
