"""nodeup: create a machine through a provider's API, then provision it over SSH.

The engine of the ``nodeup`` command from Python, with Libcloud's names::

    import nodeup
    from nodeup import MultiStepDeployment, SSHKeyDeployment, ScriptDeployment

    steps = MultiStepDeployment([SSHKeyDeployment(open("id_ed25519.pub").read()),
                                 ScriptDeployment("echo hello from $(hostname)")])
    node = nodeup.deploy_node(provider="local", name="web-1", image="debian", deploy=steps,
                              ssh_key="id_ed25519", on_output=print)
    print(node.public_ips, steps.steps[1].stdout)

``nodeup.libcloud.deploy_node(driver, deploy=...)`` does the SSH part for any Libcloud driver.
"""

from ._nodeup import __version__
from .api import (
    create_node,
    deploy_node,
    deploy_node_async,
    destroy_node,
    get_node,
    list_images,
    list_locations,
    list_nodes,
    list_sizes,
    load_stepfile,
    run,
    run_async,
)
from .deployment import (
    Deployment,
    FileDeployment,
    MultiStepDeployment,
    RebootDeployment,
    ScriptDeployment,
    ScriptFileDeployment,
    SSHKeyDeployment,
    WaitCloudInitDeployment,
)
from .errors import (
    CancelledError,
    DeploymentError,
    DeploymentException,
    InvalidCredentialsError,
    InvalidInputError,
    JournalError,
    NodeupError,
    NotFoundError,
    ProviderError,
)
from .types import HostResult, Node, NodeImage, NodeLocation, NodeSize, StepFile, StepResult

__all__ = [
    "__version__",
    "deploy_node",
    "deploy_node_async",
    "run",
    "run_async",
    "load_stepfile",
    "list_nodes",
    "create_node",
    "get_node",
    "list_images",
    "list_sizes",
    "list_locations",
    "destroy_node",
    "Deployment",
    "SSHKeyDeployment",
    "FileDeployment",
    "ScriptDeployment",
    "ScriptFileDeployment",
    "WaitCloudInitDeployment",
    "RebootDeployment",
    "MultiStepDeployment",
    "NodeupError",
    "InvalidInputError",
    "InvalidCredentialsError",
    "ProviderError",
    "NotFoundError",
    "JournalError",
    "DeploymentError",
    "DeploymentException",
    "CancelledError",
    "Node",
    "NodeImage",
    "NodeSize",
    "NodeLocation",
    "StepResult",
    "HostResult",
    "StepFile",
]
