"""A drop-in for Libcloud's ``NodeDriver.deploy_node``: ``deploy_node(driver, deploy=..., **kwargs)``
takes any Libcloud driver, uses it to create the node, wait until it runs and destroy it, and does
the SSH part with nodeup's engine (host keys checked and recorded, failing scripts fail, a lost
connection resumed). It takes Libcloud's own deployment objects
(``libcloud.compute.deployment.*``) as well as nodeup's, and Libcloud's keyword arguments.

Libcloud is optional: this module imports it only when a Libcloud object is handed to it.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from . import _nodeup
from .api import host_results, outcome, record, ssh_options, start_run, wait
from .deployment import (
    Deployment,
    FileDeployment,
    MultiStepDeployment,
    ScriptDeployment,
    SSHKeyDeployment,
)
from .errors import DeploymentError, from_report

__all__ = ["deploy_node", "to_nodeup"]

# Libcloud's deploy_node defaults.
_LIBCLOUD_SSH_PORT = 22
_LIBCLOUD_SSH_TIMEOUT = 10.0
_LIBCLOUD_TIMEOUT = 300.0
_LIBCLOUD_MAX_TRIES = 3
_LIBCLOUD_WAIT_PERIOD = 5.0
_INTERFACES = ("public_ips", "private_ips")


def _libcloud_deployment() -> Any:
    try:
        from libcloud.compute import deployment
    except ImportError:  # Libcloud is optional.
        return None
    return deployment


def to_nodeup(step: Any) -> List[Deployment]:
    """nodeup's steps for a deployment object: nodeup's own, or Libcloud's (``SSHKeyDeployment``,
    ``FileDeployment``, ``ScriptDeployment``, ``ScriptFileDeployment``, ``MultiStepDeployment``).
    A Libcloud step nodeup cannot run (one of your own that drives paramiko) is a ``TypeError``."""
    if isinstance(step, Deployment):
        return list(step._steps())
    lc = _libcloud_deployment()
    if lc is not None:
        if isinstance(step, lc.MultiStepDeployment):
            return [s for inner in step.steps for s in to_nodeup(inner)]
        if isinstance(step, lc.SSHKeyDeployment):
            return [SSHKeyDeployment(step.key)]
        if isinstance(step, lc.FileDeployment):
            return [FileDeployment(step.source, step.target)]
        if isinstance(step, lc.ScriptDeployment):
            return [ScriptDeployment(step.script, args=step.args, name=step.name, delete=step.delete, timeout=step.timeout)]
    raise TypeError(
        f"deploy_node(deploy=...): {type(step).__name__} is not a step nodeup runs: use SSHKeyDeployment, "
        "FileDeployment, ScriptDeployment, ScriptFileDeployment or MultiStepDeployment (Libcloud's or nodeup's)"
    )


def _libcloud_steps(deploy: Any) -> List[Any]:
    """The caller's own step objects, in run order, to write results back to."""
    lc = _libcloud_deployment()
    if lc is not None and isinstance(deploy, lc.MultiStepDeployment):
        return [s for inner in deploy.steps for s in _libcloud_steps(inner)]
    if isinstance(deploy, MultiStepDeployment):
        return list(deploy._steps())
    return [deploy]


def _write_back(originals: Sequence[Any], ours: Sequence[Deployment]) -> None:
    """Copies what our steps recorded onto the caller's objects (Libcloud's scripts have the same
    attributes)."""
    for original, step in zip(originals, ours):
        if original is not step and isinstance(step, ScriptDeployment):
            original.stdout, original.stderr, original.exit_status = step.stdout, step.stderr, step.exit_status


def _address(ips: Sequence[str], node: Any) -> str:
    """The first IPv4 address, else the first one (Libcloud's ``ssh_interface`` picked the list)."""
    for ip in ips:
        if ":" not in ip:
            return ip
    if ips:
        return f"[{ips[0]}]"
    raise DeploymentError(f"node {node.name} ({node.id}) has no address to log in on", kind="wait")


def _auth_options(auth: Any) -> Dict[str, Any]:
    """What Libcloud's ``auth`` (``NodeAuthPassword``) says of logging in."""
    password = getattr(auth, "password", None)
    return {"ssh_password": password} if isinstance(password, str) else {}


def deploy_node(
    driver: Any,
    deploy: Any,
    ssh_username: str = "root",
    ssh_alternate_usernames: Optional[Sequence[str]] = None,
    ssh_port: int = _LIBCLOUD_SSH_PORT,
    ssh_timeout: float = _LIBCLOUD_SSH_TIMEOUT,
    ssh_key: Any = None,
    ssh_key_password: Optional[str] = None,
    auth: Any = None,
    timeout: float = _LIBCLOUD_TIMEOUT,
    max_tries: int = _LIBCLOUD_MAX_TRIES,
    ssh_interface: str = "public_ips",
    at_exit_func: Optional[Callable[..., Any]] = None,
    wait_period: float = _LIBCLOUD_WAIT_PERIOD,
    on_output: Optional[Callable[[str, str, str], Any]] = None,
    keep_on_failure: bool = False,
    known_hosts: Optional[str] = None,
    host_key_policy: Optional[str] = None,
    **create_node_kwargs: Any,
) -> Any:
    """Libcloud's ``driver.deploy_node(deploy=..., **kwargs)`` with nodeup doing the SSH part.

    The node is made with ``driver.create_node(**create_node_kwargs, auth=auth)``, waited for with
    ``driver.wait_until_running`` (every ``wait_period`` seconds, ``timeout`` in all), and the
    steps run on its first ``ssh_interface`` address. Returns the driver's ``Node``; scripts carry
    ``stdout``, ``stderr`` and ``exit_status`` as in Libcloud.

    Stricter than Libcloud: host keys are recorded on first use in nodeup's known_hosts and a
    changed one is refused; a script that exits non-zero fails the deployment. On failure the
    node is destroyed (``driver.destroy_node``) unless ``keep_on_failure``, and
    :class:`nodeup.DeploymentError` is raised (a subclass of Libcloud's ``DeploymentException``
    when Libcloud is installed) with ``node`` the driver's node. Ctrl+C destroys the node (or calls
    ``at_exit_func(node=node)`` when given), then raises ``KeyboardInterrupt``.
    """
    function = "deploy_node"
    steps = to_nodeup(deploy)
    originals = _libcloud_steps(deploy)
    if ssh_interface not in _INTERFACES:
        raise ValueError(f"{function}(ssh_interface={ssh_interface!r}): give one of {', '.join(_INTERFACES)}")
    if isinstance(wait_period, bool) or not isinstance(wait_period, (int, float)) or wait_period <= 0:
        raise ValueError(f"{function}(wait_period={wait_period!r}): give a number of seconds above 0")
    if at_exit_func is not None and not callable(at_exit_func):
        raise TypeError(f"{function}(at_exit_func=...): expected a callable, got {type(at_exit_func).__name__}")
    ssh = dict(
        ssh_username=ssh_username,
        ssh_alternate_usernames=ssh_alternate_usernames,
        ssh_port=ssh_port,
        ssh_timeout=ssh_timeout,
        ssh_key=ssh_key,
        ssh_key_password=ssh_key_password,
        timeout=timeout,
        max_tries=max_tries,
        known_hosts=known_hosts,
        host_key_policy=host_key_policy,
        **_auth_options(auth),
    )
    _nodeup.check_ssh(ssh_options(function, **ssh))  # Checked before anything is created.
    if auth is not None:
        create_node_kwargs["auth"] = auth
    node = driver.create_node(**create_node_kwargs)
    try:
        node, address = _wait(driver, node, wait_period, timeout, ssh_interface)
        task, _ = start_run(function, [f"{address}:{ssh_port}"], steps, None, True, dict(ssh, on_output=on_output))
        wait(task)
        value, error = outcome(task)
        only = value[0] if value else {}
        record(steps, only.get("steps") or [], only.get("error"))
        _write_back(originals, steps)
        failure = error or only.get("error")
        if failure is not None:
            raise _error(from_report(failure), node)
        node.extra["nodeup_user"] = host_results(value)[0].user
        return node
    except KeyboardInterrupt:
        _at_exit(driver, node, at_exit_func)
        raise
    except BaseException as error:
        fate = _settle(driver, node, keep_on_failure)
        if isinstance(error, DeploymentError):
            error.fate = fate
            raise
        wrapped = _error(error, node)
        wrapped.fate = fate
        raise wrapped from error


def _wait(driver: Any, node: Any, wait_period: float, timeout: float, ssh_interface: str) -> Tuple[Any, str]:
    """The node once it runs, and the address to log in on."""
    ready = driver.wait_until_running(nodes=[node], wait_period=wait_period, timeout=timeout, ssh_interface=ssh_interface)
    node, ips = ready[0]
    return node, _address(list(ips), node)


def _error(cause: BaseException, node: Any) -> DeploymentError:
    """The deployment error to raise: nodeup's, carrying the driver's node, and Libcloud's
    ``DeploymentException`` too when Libcloud is installed."""
    message = getattr(cause, "message", None) or f"{type(cause).__name__}: {cause}"
    base: "type[DeploymentError]" = DeploymentError
    try:
        from libcloud.compute.types import DeploymentException

        base = type("DeploymentError", (DeploymentError, DeploymentException), {"__module__": __name__})
    except ImportError:  # Libcloud is optional.
        pass
    fields = {k: getattr(cause, k) for k in ("kind", "fate", "step", "step_kind", "stdout", "stderr", "exit_status", "completed") if hasattr(cause, k)}
    error = base(message, node=node, **fields)
    error.value = cause
    setattr(error, "driver", None)  # Libcloud's DeploymentException has it.
    return error


def _settle(driver: Any, node: Any, keep: bool) -> str:
    """A failed deployment's node: destroyed unless kept; says which (``left`` when destroying it
    failed)."""
    if keep:
        return "kept"
    try:
        driver.destroy_node(node)
    except Exception as error:  # The failure being raised matters more; say this one too.
        import warnings

        warnings.warn(f"nodeup: destroying node {getattr(node, 'id', node)} failed: {error}", stacklevel=3)
        return "left"
    return "destroyed"


def _at_exit(driver: Any, node: Any, at_exit_func: Optional[Callable[..., Any]]) -> None:
    """A cancelled deployment's node: to ``at_exit_func(node=node)`` (Libcloud's call), else
    destroyed; a function that raises is reported and the node destroyed."""
    if at_exit_func is None:
        _settle(driver, node, False)
        return
    try:
        at_exit_func(node=node)
    except Exception:
        import traceback

        traceback.print_exc()
        _settle(driver, node, False)
