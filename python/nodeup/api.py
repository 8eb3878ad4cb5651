"""nodeup's engine from Python: ``deploy_node`` (and its asyncio form), ``run`` on machines that
exist, ``load_stepfile``, and the providers' calls. Arguments are checked before anything is
created (``TypeError``/``ValueError`` naming the argument); the engine runs on its own threads
with the GIL released; Ctrl+C cancels and cleans up as ``nodeup deploy`` does."""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import _nodeup
from .deployment import Deployment, from_spec
from .errors import DeploymentError, from_report
from .types import HostResult, Node, NodeImage, NodeLocation, NodeSize, StepFile, StepResult

OnOutput = Callable[[str, str, str], Any]
"""``on_output(node, stream, line)``: ``stream`` is ``"stdout"`` or ``"stderr"``."""

DeployArg = Union[Deployment, Sequence[Deployment], StepFile]

# How often the waiting thread wakes to let Python handle a signal (Ctrl+C).
_SIGNAL_CHECK_SECONDS = 0.1

_HOST_KEY_POLICIES = ("strict", "accept-new", "off")


def _fail(function: str, name: str, value: Any, wanted: str) -> TypeError:
    return TypeError(f"{function}({name}=...): expected {wanted}, got {type(value).__name__} {value!r}")


def _optional(function: str, name: str, value: Any, kind: type, wanted: str) -> Any:
    if value is None:
        return None
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        raise _fail(function, name, value, wanted)
    return value


def _positive(function: str, name: str, value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(function, name, value, "a number of seconds")
    if value <= 0:
        raise ValueError(f"{function}({name}={value!r}): give a number of seconds above 0")
    return float(value)


def _strings(function: str, name: str, value: Any) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise _fail(function, name, value, "a list of strings")
    items = list(value)
    for item in items:
        if not isinstance(item, str):
            raise _fail(function, name, item, "strings")
    return items


def _paths(function: str, name: str, value: Any) -> List[str]:
    """One key file or several (Libcloud's ``ssh_key`` is either)."""
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    elif not isinstance(value, Iterable):
        raise _fail(function, name, value, "a path or a list of paths")
    paths = []
    for item in value:
        if not isinstance(item, (str, os.PathLike)):
            raise _fail(function, name, item, "paths")
        paths.append(os.fspath(item))
    for path in paths:
        _readable(function, name, path)
    return paths


def _readable(function: str, name: str, path: str) -> None:
    """A key file that cannot be read is refused here, naming the argument."""
    try:
        with open(path, "rb"):
            pass
    except OSError as error:
        raise ValueError(f"{function}({name}={path!r}): cannot be read ({error.strerror}); give the path of a private key file") from None


def _callable(function: str, name: str, value: Any) -> Any:
    if value is not None and not callable(value):
        raise _fail(function, name, value, "a callable")
    return value


def ssh_options(function: str, **given: Any) -> Dict[str, Any]:
    """The SSH and wait options, checked; only those given are passed on."""
    ssh: Dict[str, Any] = {}
    username = _optional(function, "ssh_username", given.get("ssh_username"), str, "a string")
    if username is not None:
        ssh["ssh_username"] = username
    ssh["ssh_alternate_usernames"] = _strings(function, "ssh_alternate_usernames", given.get("ssh_alternate_usernames"))
    port = _optional(function, "ssh_port", given.get("ssh_port"), int, "an int")
    if port is not None:
        if not 1 <= port <= 65535:
            raise ValueError(f"{function}(ssh_port={port}): give a port from 1 to 65535")
        ssh["ssh_port"] = port
    for name in ("ssh_timeout", "timeout"):
        seconds = _positive(function, name, given.get(name))
        if seconds is not None:
            ssh[name] = seconds
    ssh["ssh_key"] = _paths(function, "ssh_key", given.get("ssh_key"))
    for name in ("ssh_key_password", "ssh_password", "jump"):
        text = _optional(function, name, given.get(name), str, "a string")
        if text is not None:
            ssh[name] = text
    max_tries = _optional(function, "max_tries", given.get("max_tries"), int, "an int")
    if max_tries is not None:
        if max_tries < 1:
            raise ValueError(f"{function}(max_tries={max_tries}): give 1 or more")
        ssh["max_tries"] = max_tries
    for name in ("known_hosts", "ssh_config"):
        path = given.get(name)
        if path is not None:
            if not isinstance(path, (str, os.PathLike)):
                raise _fail(function, name, path, "a path")
            ssh[name] = os.fspath(path)
    policy = _optional(function, "host_key_policy", given.get("host_key_policy"), str, "a string")
    if policy is not None:
        if policy not in _HOST_KEY_POLICIES:
            raise ValueError(f"{function}(host_key_policy={policy!r}): give one of {', '.join(_HOST_KEY_POLICIES)}")
        ssh["host_key_policy"] = policy
    for name in ("force_ipv4", "retry_failed_steps"):
        flag = _optional(function, name, given.get(name), bool, "True or False")
        if flag is not None:
            ssh[name] = flag
    return ssh


def steps_of(function: str, deploy: Any) -> Tuple[List[Deployment], List[Dict[str, Any]], Optional[str]]:
    """The deployment's steps in order, their specs for the engine, and the step file when
    ``deploy`` is one."""
    if isinstance(deploy, StepFile):
        return list(deploy.steps), [], deploy.path
    if isinstance(deploy, Deployment):
        steps = list(deploy._steps())
    elif isinstance(deploy, (list, tuple)):
        steps = []
        for item in deploy:
            if not isinstance(item, Deployment):
                raise _fail(function, "deploy", item, "Deployment objects")
            steps.extend(item._steps())
    else:
        raise _fail(function, "deploy", deploy, "a Deployment, a list of them, or a StepFile")
    if not steps:
        raise ValueError(f"{function}(deploy=...): give at least one step")
    return steps, [s._spec() for s in steps], None


def _journal(function: str, journal: Any) -> Optional[str]:
    """``None``: the configured journal; ``False``: none; a path or ``postgres://`` URL."""
    if journal is None or journal is True:
        return None
    if journal is False:
        return "off"
    if isinstance(journal, (str, os.PathLike)):
        return os.fspath(journal)
    raise _fail(function, "journal", journal, "a path, a postgres:// URL, or False")


def record(steps: Sequence[Deployment], results: Sequence[Mapping[str, Any]], failed: Optional[Mapping[str, Any]] = None) -> None:
    """Writes each step's result back to its deployment object (scripts: output, exit status)."""
    for step, result in zip(steps, results):
        step._took(StepResult(result).as_dict())
    if failed and failed.get("step"):
        index = failed["step"] - 1
        if 0 <= index < len(steps):
            steps[index]._took(failed)


def wait(task: Any) -> Any:
    """Waits for a task with the GIL released, waking to let Python handle Ctrl+C: the first one
    cancels the task and waits for its clean-up, then is raised; a second one stops waiting."""
    try:
        while not task.wait(_SIGNAL_CHECK_SECONDS):
            pass
    except KeyboardInterrupt:
        task.cancel()
        task.wait()
        raise
    return task


async def wait_async(task: Any) -> Any:
    """Awaits a task without blocking the event loop; cancelling the awaiting coroutine cancels the
    task and waits for its clean-up."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    def done() -> None:
        def settle() -> None:
            if not finished.done():
                finished.set_result(None)

        loop.call_soon_threadsafe(settle)

    task.add_done_callback(done)
    try:
        await asyncio.shield(finished)
    except asyncio.CancelledError:
        task.cancel()
        await finished
        raise
    return task


def outcome(task: Any) -> Tuple[Any, Optional[Mapping[str, Any]]]:
    """The task's value and error report; a Python callback's exception is raised, with nodeup's
    report of what it stopped added as a note."""
    value, error, raised = task.result()
    if raised is not None:
        if error is not None and hasattr(raised, "add_note"):
            raised.add_note(f"nodeup: {error['message']} (fate of the node: {error.get('fate')})")
        raise raised
    return value, error


def _deploy_args(function: str, kwargs: Dict[str, Any]) -> Tuple[Dict[str, Any], List[Deployment]]:
    """Checks ``deploy_node``'s arguments and starts nothing: the call to make, the steps."""
    steps, specs, stepfile = steps_of(function, kwargs.pop("deploy"))
    request: Dict[str, Any] = {}
    for name in ("provider", "name", "image", "size", "location"):
        value = _optional(function, name, kwargs.pop(name, None), str, "a string")
        if value is not None:
            request[name] = value
    if stepfile is None and "name" not in request:
        raise TypeError(f"{function}(): give name=, the node's name")
    for name in ("options", "provider_settings"):
        value = kwargs.pop(name, None)
        if value is not None:
            if not isinstance(value, Mapping):
                raise _fail(function, name, value, "a dict")
            request[name] = dict(value)
    call = dict(
        request=request,
        steps=specs,
        stepfile=stepfile,
        keep_on_failure=bool(kwargs.pop("keep_on_failure", False)),
        on_output=_callable(function, "on_output", kwargs.pop("on_output", None)),
        journal=_journal(function, kwargs.pop("journal", None)),
    )
    at_exit_func = _callable(function, "at_exit_func", kwargs.pop("at_exit_func", None))
    if at_exit_func is not None:
        call["at_exit_func"] = lambda node: at_exit_func(Node(node))
    call["ssh"] = ssh_options(function, **kwargs)
    unknown = set(kwargs) - _SSH_KEYWORDS
    if unknown:
        raise TypeError(f"{function}() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    return call, steps


_SSH_KEYWORDS = {
    "ssh_username",
    "ssh_alternate_usernames",
    "ssh_port",
    "ssh_timeout",
    "ssh_key",
    "ssh_key_password",
    "ssh_password",
    "timeout",
    "max_tries",
    "known_hosts",
    "host_key_policy",
    "jump",
    "ssh_config",
    "force_ipv4",
    "retry_failed_steps",
}


def _start_deploy(function: str, kwargs: Dict[str, Any]) -> Tuple[Any, List[Deployment]]:
    call, steps = _deploy_args(function, kwargs)
    request, specs, ssh = call.pop("request"), call.pop("steps"), call.pop("ssh")
    return _nodeup.start_deploy(request, specs, ssh, **call), steps


def _deployed(task: Any, steps: List[Deployment]) -> Node:
    value, error = outcome(task)
    if error is not None:
        record(steps, error.get("completed") or [], error)
        raise from_report(error)
    record(steps, value["steps"])
    node = Node(value["node"])
    node.extra.setdefault("nodeup_user", value["user"])
    return node


def deploy_node(
    *,
    deploy: DeployArg,
    name: Optional[str] = None,
    provider: Optional[str] = None,
    image: Optional[str] = None,
    size: Optional[str] = None,
    location: Optional[str] = None,
    options: Optional[Mapping[str, Any]] = None,
    provider_settings: Optional[Mapping[str, Any]] = None,
    ssh_username: Optional[str] = None,
    ssh_alternate_usernames: Optional[Sequence[str]] = None,
    ssh_port: Optional[int] = None,
    ssh_timeout: Optional[float] = None,
    ssh_key: Optional[Union[str, Sequence[str]]] = None,
    ssh_key_password: Optional[str] = None,
    timeout: Optional[float] = None,
    max_tries: Optional[int] = None,
    at_exit_func: Optional[Callable[[Node], Any]] = None,
    on_output: Optional[OnOutput] = None,
    keep_on_failure: bool = False,
    journal: Union[None, bool, str] = None,
    **more: Any,
) -> Node:
    """Creates a node on ``provider`` (default ``local``), waits until it runs and accepts a login
    (trying ``ssh_username``, then the image's login user and root, then the alternates), runs the
    ``deploy`` steps in order over one connection, and returns the node (``extra['nodeup_user']``
    is the user logged in as). Script steps carry their ``stdout``, ``stderr``, ``exit_status``.

    More keywords: ``ssh_password``, ``known_hosts``, ``host_key_policy`` (``accept-new`` by default
    for new nodes), ``jump``, ``ssh_config``, ``force_ipv4``, ``retry_failed_steps``.

    Raises :class:`DeploymentError` (with ``node``, ``step``, ``stdout``, ``stderr``) when a step,
    the wait or the login fails: the node is destroyed first unless ``keep_on_failure``.
    Ctrl+C cancels: the node goes to ``at_exit_func`` (default: destroyed), then
    ``KeyboardInterrupt`` is raised. ``TypeError``/``ValueError`` for bad arguments, before
    anything is created.
    """
    kwargs = dict(locals())
    kwargs.update(kwargs.pop("more"))
    task, steps = _start_deploy("deploy_node", kwargs)
    return _deployed(wait(task), steps)


async def deploy_node_async(**kwargs: Any) -> Node:
    """:func:`deploy_node` for asyncio: the same arguments; cancelling the awaiting task cancels
    the deployment and waits for its clean-up."""
    task, steps = _start_deploy("deploy_node_async", dict(kwargs))
    return _deployed(await wait_async(task), steps)


def _hosts(function: str, hosts: Any) -> List[str]:
    if isinstance(hosts, str):
        return [hosts]
    return _strings(function, "hosts", hosts)


def start_run(function: str, hosts: Any, deploy: Any, parallel: Optional[int], created: bool, kwargs: Dict[str, Any]) -> Tuple[Any, List[Deployment]]:
    """Checks ``run``'s arguments and starts it."""
    steps, specs, stepfile = steps_of(function, deploy)
    parallel = _optional(function, "parallel", parallel, int, "an int")
    if parallel is not None and parallel < 1:
        raise ValueError(f"{function}(parallel={parallel}): give 1 or more")
    on_output = _callable(function, "on_output", kwargs.pop("on_output", None))
    journal = _journal(function, kwargs.pop("journal", None))
    unknown = set(kwargs) - _SSH_KEYWORDS
    if unknown:
        raise TypeError(f"{function}() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    ssh = ssh_options(function, **kwargs)
    task = _nodeup.start_run(
        _hosts(function, hosts), specs, ssh, stepfile=stepfile, parallel=parallel, created=created, on_output=on_output, journal=journal
    )
    return task, steps


def host_results(value: Sequence[Mapping[str, Any]]) -> List[HostResult]:
    """Each host's result, its error as the exception it would raise."""
    results = []
    for host in value:
        error = host.get("error")
        exc = from_report(error) if error else None
        if isinstance(exc, DeploymentError):
            exc.node = host["host"]
        results.append(HostResult(host["host"], host["ok"], host["user"], [StepResult(s) for s in host["steps"]], exc))
    return results


def run(
    hosts: Union[str, Sequence[str]],
    deploy: DeployArg,
    *,
    parallel: Optional[int] = None,
    on_output: Optional[OnOutput] = None,
    journal: Union[None, bool, str] = None,
    **ssh: Any,
) -> List[HostResult]:
    """Runs the ``deploy`` steps on machines that exist (``[user@]host[:port]`` each), at most
    ``parallel`` at once (default 50), as ``nodeup run`` does: host keys checked against
    ``~/.ssh/known_hosts`` (``known_hosts=``, ``host_key_policy=`` to change it), the user's keys
    and agent unless ``ssh_key`` is given. Returns one :class:`HostResult` per host, in order; a
    host that failed has ``ok`` false and its ``error``. With a single ``Deployment`` object and
    one host, its script steps carry their output afterwards."""
    task, steps = start_run("run", hosts, deploy, parallel, False, dict(ssh, on_output=on_output, journal=journal))
    wait(task)
    value, error = outcome(task)
    if error is not None:
        raise from_report(error)
    results = host_results(value)
    if len(value) == 1:
        only = value[0]
        record(steps, only["steps"], only.get("error"))
    return results


async def run_async(hosts: Union[str, Sequence[str]], deploy: DeployArg, **kwargs: Any) -> List[HostResult]:
    """:func:`run` for asyncio."""
    parallel = kwargs.pop("parallel", None)
    task, _ = start_run("run_async", hosts, deploy, parallel, False, dict(kwargs))
    await wait_async(task)
    value, error = outcome(task)
    if error is not None:
        raise from_report(error)
    return host_results(value)


def load_stepfile(path: Union[str, "os.PathLike[str]"]) -> StepFile:
    """Reads and checks a step file (``ValueError`` naming the file, line and column of what is
    wrong). Pass it as ``deploy=`` to use its ``[ssh]``, ``[provider]`` and ``[node]`` sections."""
    if not isinstance(path, (str, os.PathLike)):
        raise _fail("load_stepfile", "path", path, "a path")
    data = _nodeup.load_stepfile(os.fspath(path))
    return StepFile(data, [from_spec(s) for s in data["steps"]])


def _call(provider: str, call: Dict[str, Any], provider_settings: Optional[Mapping[str, Any]]) -> Any:
    if not isinstance(provider, str):
        raise _fail(call["method"], "provider", provider, "a provider's name")
    if provider_settings is not None and not isinstance(provider_settings, Mapping):
        raise _fail(call["method"], "provider_settings", provider_settings, "a dict")
    task = wait(_nodeup.start_call(provider, call, dict(provider_settings or {})))
    value, error = outcome(task)
    if error is not None:
        raise from_report(error)
    return value


def list_nodes(provider: str, provider_settings: Optional[Mapping[str, Any]] = None) -> List[Node]:
    """The provider's nodes."""
    return [Node(n) for n in _call(provider, {"method": "list_nodes"}, provider_settings)]


def get_node(provider: str, node_id: str, provider_settings: Optional[Mapping[str, Any]] = None) -> Node:
    """One node by id (:class:`NotFoundError` when the provider has none)."""
    return Node(_call(provider, {"method": "get_node", "id": node_id}, provider_settings))


def list_images(provider: str, location: Optional[str] = None, provider_settings: Optional[Mapping[str, Any]] = None) -> List[NodeImage]:
    """The provider's images (of ``location`` when given)."""
    return [NodeImage(i) for i in _call(provider, {"method": "list_images", "location": location}, provider_settings)]


def list_sizes(provider: str, location: Optional[str] = None, provider_settings: Optional[Mapping[str, Any]] = None) -> List[NodeSize]:
    """The provider's sizes (of ``location`` when given)."""
    return [NodeSize(s) for s in _call(provider, {"method": "list_sizes", "location": location}, provider_settings)]


def list_locations(provider: str, provider_settings: Optional[Mapping[str, Any]] = None) -> List[NodeLocation]:
    """The provider's locations."""
    return [NodeLocation(loc) for loc in _call(provider, {"method": "list_locations"}, provider_settings)]


def create_node(
    provider: str,
    name: str,
    image: Optional[str] = None,
    size: Optional[str] = None,
    location: Optional[str] = None,
    options: Optional[Mapping[str, Any]] = None,
    ssh_public_key: Optional[str] = None,
    password: Optional[str] = None,
    provider_settings: Optional[Mapping[str, Any]] = None,
) -> Node:
    """Creates a node and returns it as the provider answers (it may not run yet); nothing is
    deployed and nothing is recorded in the journal (as Libcloud's ``create_node``).
    ``ssh_public_key`` (one OpenSSH line) or ``password`` is how the node lets its user in."""
    call: Dict[str, Any] = {"method": "create_node"}
    for field, value in (("name", name), ("image", image), ("size", size), ("location", location), ("ssh_public_key", ssh_public_key), ("password", password)):
        call[field] = _optional("create_node", field, value, str, "a string")
    if call["name"] is None:
        raise TypeError("create_node(): give name=, the node's name")
    if options is not None and not isinstance(options, Mapping):
        raise _fail("create_node", "options", options, "a dict")
    call["options"] = dict(options or {})
    return Node(_call(provider, call, provider_settings))


def destroy_node(provider: str, node: Union[Node, str], provider_settings: Optional[Mapping[str, Any]] = None) -> bool:
    """Destroys a node (a :class:`Node` or its id) and forgets its host keys in nodeup's
    known_hosts."""
    node_id = node.id if isinstance(node, Node) else node
    if not isinstance(node_id, str):
        raise _fail("destroy_node", "node", node, "a Node or a node id")
    return bool(_call(provider, {"method": "destroy_node", "id": node_id}, provider_settings))
