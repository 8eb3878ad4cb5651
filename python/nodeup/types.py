"""What providers and deployments answer: nodes, images, sizes, locations, step results, the
result of a run on one host. Plain classes with Libcloud's attribute names where Libcloud has
them."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

__all__ = ["Node", "NodeImage", "NodeSize", "NodeLocation", "StepResult", "HostResult", "StepFile"]


class Node:
    """A node as its provider reports it: ``id``, ``name``, ``state`` (``running``, ``pending``,
    ``stopped``, ``terminated``, ``error``, ...), ``public_ips``, ``private_ips``, ``image``,
    ``size``, ``provider`` and ``extra`` (the provider's own facts: ``ssh_port``, ``login_user``,
    ``host_keys``, ``location`` ...)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.id: str = data["id"]
        self.name: str = data["name"]
        self.state: str = data["state"]
        self.public_ips: List[str] = list(data.get("public_ips") or [])
        self.private_ips: List[str] = list(data.get("private_ips") or [])
        self.image: Optional[str] = data.get("image")
        self.size: Optional[str] = data.get("size")
        self.provider: str = data.get("provider", "")
        self.extra: Dict[str, Any] = dict(data.get("extra") or {})

    def __repr__(self) -> str:
        return f"<Node id={self.id!r} name={self.name!r} state={self.state!r} public_ips={self.public_ips!r} provider={self.provider!r}>"


class _Plain:
    """An answer kept as given, its fields as attributes."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.__dict__.update(data)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if k in ("id", "name"))
        return f"<{type(self).__name__} {fields}>"


class NodeImage(_Plain):
    """An image: ``id``, ``name``, ``extra``."""

    id: str
    name: str
    extra: Dict[str, Any]


class NodeSize(_Plain):
    """A size: ``id``, ``name``, ``ram`` (MB), ``disk`` (GB), ``bandwidth``, ``price``, ``extra``."""

    id: str
    name: str
    extra: Dict[str, Any]


class NodeLocation(_Plain):
    """A location: ``id``, ``name``, ``country``, ``extra``."""

    id: str
    name: str
    country: Optional[str]
    extra: Dict[str, Any]


def exit_code(status: Optional[Mapping[str, Any]]) -> Optional[int]:
    """The exit status of a command that exited (``None`` when a signal ended it)."""
    if isinstance(status, Mapping) and "code" in status:
        return int(status["code"])
    return None


class StepResult:
    """What one step did: ``kind``, ``exit_status`` (scripts), ``stdout``, ``stderr`` (the kept
    tail), ``duration`` (seconds), ``note``."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.kind: str = data.get("kind", "")
        self.status: Optional[Mapping[str, Any]] = data.get("status")
        self.exit_status: Optional[int] = exit_code(self.status)
        self.stdout: str = data.get("stdout", "")
        self.stderr: str = data.get("stderr", "")
        self.duration: float = float(data.get("duration", 0.0))
        self.note: str = data.get("note", "")

    def as_dict(self) -> Dict[str, Any]:
        """The result as the deployment classes record it."""
        return {"stdout": self.stdout, "stderr": self.stderr, "exit_status": self.exit_status}

    def __repr__(self) -> str:
        return f"<StepResult kind={self.kind!r} exit_status={self.exit_status!r} note={self.note!r}>"


class HostResult:
    """One host of :func:`nodeup.run`: ``host``, ``ok``, ``user``, ``steps`` and, when it failed,
    ``error`` (the exception it would raise alone)."""

    def __init__(self, host: str, ok: bool, user: str, steps: List[StepResult], error: Optional[Exception]) -> None:
        self.host = host
        self.ok = ok
        self.user = user
        self.steps = steps
        self.error = error

    def __repr__(self) -> str:
        return f"<HostResult host={self.host!r} ok={self.ok!r} user={self.user!r}>"


class StepFile:
    """A step file read and checked (:func:`nodeup.load_stepfile`): ``path``, its ``[node]``
    (``provider``, ``name``, ``image``, ``size``, ``location``, ``count``) and ``steps`` (the
    deployment classes). Passed as ``deploy=``, the engine uses the file itself: its ``[ssh]`` and
    ``[provider]`` sections as ``nodeup deploy`` does, its ``[node]`` where a keyword is not
    given."""

    def __init__(self, data: Mapping[str, Any], steps: List[Any]) -> None:
        self.path: str = str(data["path"])
        self.provider: Optional[str] = data.get("provider")
        self.name: Optional[str] = data.get("name")
        self.image: Optional[str] = data.get("image")
        self.size: Optional[str] = data.get("size")
        self.location: Optional[str] = data.get("location")
        self.count: Optional[int] = data.get("count")
        self.steps = steps

    def __repr__(self) -> str:
        return f"<StepFile {self.path!r} steps={len(self.steps)}>"
