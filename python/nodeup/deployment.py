"""Deployment steps, named and shaped as Libcloud's (``libcloud.compute.deployment``).

Each class describes one step; nodeup's engine runs it over the node's one SSH session. After a
run, script steps carry ``stdout``, ``stderr`` and ``exit_status`` as Libcloud's do.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

__all__ = [
    "Deployment",
    "SSHKeyDeployment",
    "FileDeployment",
    "ScriptDeployment",
    "ScriptFileDeployment",
    "WaitCloudInitDeployment",
    "RebootDeployment",
    "MultiStepDeployment",
]

StepSpec = Dict[str, Any]


def _text(value: Any, field: str, owner: str) -> str:
    """A string, or the content of a file object (Libcloud accepts both for keys and scripts)."""
    if hasattr(value, "read"):
        value = value.read()
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str):
        raise TypeError(f"{owner}({field}=...): expected a string or a file object, got {type(value).__name__}")
    return value


def _seconds(value: Any, field: str, owner: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}({field}=...): expected a number of seconds, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{owner}({field}={value!r}): give a number of seconds above 0")
    return float(value)


def _strings(value: Any, field: str, owner: str) -> List[str]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{owner}({field}=...): expected a list of strings, got {type(value).__name__}")
    items = list(value)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{owner}({field}=...): expected strings, got {type(item).__name__} {item!r}")
    return items


class Deployment:
    """A step of a deployment. Subclasses describe what runs; the engine runs them."""

    def _steps(self) -> Iterator["Deployment"]:
        """The steps in the order they run (a multi-step unfolded)."""
        yield self

    def _spec(self) -> StepSpec:
        raise NotImplementedError

    def _took(self, result: Mapping[str, Any]) -> None:
        """Records what the step did (scripts: their output and exit status)."""


class SSHKeyDeployment(Deployment):
    """Adds a public key (one OpenSSH line, or a file object holding it) to the login user's
    ``~/.ssh/authorized_keys`` (made 0700/0600 when missing; a key already there is not added
    twice)."""

    def __init__(self, key: Union[str, Any]) -> None:
        self.key = _text(key, "key", "SSHKeyDeployment").strip()

    def _spec(self) -> StepSpec:
        return {"kind": "ssh-key", "key": self.key}


class FileDeployment(Deployment):
    """Uploads the local file ``source`` to ``target`` on the node, atomically (a temporary name
    in the target's directory, then renamed), with ``mode`` (octal, e.g. ``0o644``) when given,
    as root when ``sudo``."""

    def __init__(self, source: Union[str, "os.PathLike[str]"], target: str, mode: Optional[int] = None, sudo: bool = False) -> None:
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"FileDeployment(source=...): expected a path, got {type(source).__name__}")
        if not isinstance(target, str):
            raise TypeError(f"FileDeployment(target=...): expected a string, got {type(target).__name__}")
        if mode is not None and (isinstance(mode, bool) or not isinstance(mode, int)):
            raise TypeError(f"FileDeployment(mode=...): expected an int such as 0o644, got {type(mode).__name__}")
        if mode is not None and not 0 <= mode <= 0o7777:
            raise ValueError(f"FileDeployment(mode={mode:o}): give a mode from 0o0 to 0o7777")
        self.source = os.fspath(source)
        self.target = target
        self.mode = mode
        self.sudo = bool(sudo)

    def _spec(self) -> StepSpec:
        return {"kind": "file", "source": self.source, "target": self.target, "mode": self.mode, "sudo": self.sudo}


class ScriptDeployment(Deployment):
    """Runs a script on the node: uploaded to a new private directory (0700, an unpredictable
    name), run with ``args`` (each quoted for the shell) and ``env``, within ``timeout`` seconds,
    removed afterwards unless ``delete`` is false. An exit status not in ``exit_codes`` fails the
    deployment. After the run: ``stdout``, ``stderr``, ``exit_status``.

    ``name`` is the script's file name on the node (a path's last part is used). Unlike
    Libcloud, ``delete`` is true by default: nothing of the script is left on the node.
    """

    def __init__(
        self,
        script: Union[str, Any],
        args: Optional[Sequence[str]] = None,
        name: Optional[str] = None,
        delete: bool = True,
        timeout: Optional[float] = None,
        sudo: bool = False,
        env: Optional[Mapping[str, str]] = None,
        exit_codes: Sequence[int] = (0,),
    ) -> None:
        owner = type(self).__name__
        self.script = _text(script, "script", owner)
        self.args = _strings(args, "args", owner)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{owner}(name=...): expected a string, got {type(name).__name__}")
        self.name = name
        self.delete = bool(delete)
        self.timeout = _seconds(timeout, "timeout", owner)
        self.sudo = bool(sudo)
        if env is not None and not isinstance(env, Mapping):
            raise TypeError(f"{owner}(env=...): expected a dict of strings, got {type(env).__name__}")
        self.env: Dict[str, str] = dict(env or {})
        for key, value in self.env.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError(f"{owner}(env=...): expected strings, got {key!r}: {value!r}")
        self.exit_codes = [int(c) for c in exit_codes]
        self.stdout: Optional[str] = None
        self.stderr: Optional[str] = None
        self.exit_status: Optional[int] = None

    def _source(self) -> StepSpec:
        return {"script": self.script}

    def _spec(self) -> StepSpec:
        spec: StepSpec = {
            "kind": "script",
            "args": self.args,
            "name": os.path.basename(self.name) if self.name else None,
            "delete": self.delete,
            "timeout": self.timeout,
            "sudo": self.sudo,
            "env": list(self.env.items()),
            "exit_codes": self.exit_codes,
        }
        spec.update(self._source())
        return spec

    def _took(self, result: Mapping[str, Any]) -> None:
        self.stdout = result.get("stdout")
        self.stderr = result.get("stderr")
        self.exit_status = result.get("exit_status")


class ScriptFileDeployment(ScriptDeployment):
    """Runs the script in the local file ``script_file`` (read when the deployment starts), as
    :class:`ScriptDeployment` does."""

    def __init__(
        self,
        script_file: Union[str, "os.PathLike[str]"],
        args: Optional[Sequence[str]] = None,
        name: Optional[str] = None,
        delete: bool = True,
        timeout: Optional[float] = None,
        sudo: bool = False,
        env: Optional[Mapping[str, str]] = None,
        exit_codes: Sequence[int] = (0,),
    ) -> None:
        if not isinstance(script_file, (str, os.PathLike)):
            raise TypeError(f"ScriptFileDeployment(script_file=...): expected a path, got {type(script_file).__name__}")
        self.script_file = os.fspath(script_file)
        super().__init__("", args, name or os.path.basename(self.script_file), delete, timeout, sudo, env, exit_codes)

    def _source(self) -> StepSpec:
        return {"script_file": self.script_file}


class WaitCloudInitDeployment(Deployment):
    """Waits until cloud-init has finished on the node (``cloud-init status --wait``), at most
    ``timeout`` seconds; fails when cloud-init failed."""

    def __init__(self, timeout: Optional[float] = None) -> None:
        self.timeout = _seconds(timeout, "timeout", "WaitCloudInitDeployment")

    def _spec(self) -> StepSpec:
        return {"kind": "wait-cloud-init", "timeout": self.timeout}


class RebootDeployment(Deployment):
    """Reboots the node and waits (at most ``timeout`` seconds) until it is back with a new boot,
    then logs in again for the steps after it."""

    def __init__(self, timeout: Optional[float] = None) -> None:
        self.timeout = _seconds(timeout, "timeout", "RebootDeployment")

    def _spec(self) -> StepSpec:
        return {"kind": "reboot", "timeout": self.timeout}


class MultiStepDeployment(Deployment):
    """Several steps, run in order over one connection."""

    def __init__(self, add: Optional[Union[Deployment, Sequence[Deployment]]] = None) -> None:
        self.steps: List[Deployment] = []
        if add is not None:
            self.add(add)

    def add(self, add: Union[Deployment, Sequence[Deployment]]) -> None:
        """Adds a step, or several in order."""
        items = add if isinstance(add, (list, tuple)) else [add]
        for item in items:
            if not isinstance(item, Deployment):
                raise TypeError(f"MultiStepDeployment.add: expected a Deployment, got {type(item).__name__}")
            self.steps.append(item)

    def _steps(self) -> Iterator[Deployment]:
        for step in self.steps:
            yield from step._steps()

    def _spec(self) -> StepSpec:
        raise TypeError("a MultiStepDeployment is unfolded into its steps")


def from_spec(spec: Mapping[str, Any]) -> Deployment:
    """The deployment class of a step as the engine describes it (a step file's steps)."""
    kind = spec["kind"]
    if kind == "ssh-key":
        return SSHKeyDeployment(spec["key"])
    if kind == "file":
        return FileDeployment(spec["source"], spec["target"], spec.get("mode"), spec.get("sudo", False))
    if kind == "script":
        common = dict(
            args=spec.get("args"),
            name=spec.get("name"),
            delete=spec.get("delete", True),
            timeout=spec.get("timeout"),
            sudo=spec.get("sudo", False),
            env=dict(spec.get("env") or []),
            exit_codes=spec.get("exit_codes") or (0,),
        )
        if spec.get("script_file") is not None:
            return ScriptFileDeployment(spec["script_file"], **common)
        return ScriptDeployment(spec["script"], **common)
    if kind == "wait-cloud-init":
        return WaitCloudInitDeployment(spec.get("timeout"))
    if kind == "reboot":
        return RebootDeployment(spec.get("timeout"))
    raise ValueError(f"unknown step kind {kind!r}")
