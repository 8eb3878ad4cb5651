"""nodeup's exceptions. Each carries the engine's whole message (the causes included)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from .types import Node, StepResult, exit_code

__all__ = [
    "NodeupError",
    "InvalidInputError",
    "InvalidCredentialsError",
    "ProviderError",
    "NotFoundError",
    "JournalError",
    "DeploymentError",
    "DeploymentException",
    "CancelledError",
]


class NodeupError(Exception):
    """Anything nodeup reports; ``message`` is the whole message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInputError(NodeupError, ValueError):
    """Bad input or configuration found by the engine (a step, the ssh_config, no way to log in);
    it says what to fix. Nothing was created."""


class InvalidCredentialsError(NodeupError):
    """The provider refused the credentials; the message names where they come from."""


class ProviderError(NodeupError):
    """The provider failed."""


class NotFoundError(ProviderError):
    """The provider has no such node, image, size or location."""


class JournalError(NodeupError):
    """The journal cannot record the deployment, or another run holds the node's name."""


class DeploymentError(NodeupError):
    """A deployment that failed: ``node`` (``None`` when none was created), ``fate`` (what became
    of it: ``destroyed``, ``kept``, ``left``, ``not-created``), the failing ``step`` (1-based, in
    order) and ``step_kind``, its ``stdout``, ``stderr`` and ``exit_status``, the ``completed``
    steps' results, and ``kind`` (``wait``, ``login``, ``step``, ``cancelled``, ``provider``, ...)."""

    def __init__(
        self,
        message: str,
        node: Optional[Any] = None,
        kind: str = "step",
        fate: Optional[str] = None,
        step: Optional[int] = None,
        step_kind: Optional[str] = None,
        stdout: Optional[str] = None,
        stderr: Optional[str] = None,
        exit_status: Optional[int] = None,
        completed: Optional[List[StepResult]] = None,
    ) -> None:
        super().__init__(message)
        self.node = node
        self.kind = kind
        self.fate = fate
        self.step = step
        self.step_kind = step_kind
        self.stdout = stdout
        self.stderr = stderr
        self.exit_status = exit_status
        self.completed = completed or []
        # Libcloud's DeploymentException names: the cause and the node.
        self.value: BaseException = self


DeploymentException = DeploymentError
"""Libcloud's name for it."""


class CancelledError(DeploymentError):
    """The deployment was cancelled (``Task.cancel``, a callback that raised); its node went to the
    at-exit function."""


_PLAIN: Dict[str, "type[NodeupError]"] = {
    "invalid": InvalidInputError,
    "invalid_credentials": InvalidCredentialsError,
    "provider": ProviderError,
    "not_found": NotFoundError,
    "journal": JournalError,
}


def from_report(report: Mapping[str, Any], node: Optional[Any] = None) -> NodeupError:
    """The exception of an error report from the engine. ``node`` replaces the report's node
    (the Libcloud drop-in hands back the driver's own)."""
    kind = report["kind"]
    message = report["message"]
    node = node if node is not None else (Node(report["node"]) if report.get("node") else None)
    plain = _PLAIN.get(kind)
    if plain is not None and node is None:
        return plain(message)
    cls = CancelledError if kind == "cancelled" else DeploymentError
    return cls(
        message,
        node=node,
        kind=kind,
        fate=report.get("fate"),
        step=report.get("step"),
        step_kind=report.get("step_kind"),
        stdout=report.get("stdout"),
        stderr=report.get("stderr"),
        exit_status=report.get("exit_status", exit_code(report.get("status"))),
        completed=[StepResult(r) for r in report.get("completed") or []],
    )
