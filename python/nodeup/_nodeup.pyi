"""Type stubs of nodeup's extension module (the engine's side; use the ``nodeup`` package)."""

from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

__version__: str

class Task:
    """Work under way on nodeup's runtime."""

    def wait(self, timeout: Optional[float] = None) -> bool: ...
    def cancel(self) -> None: ...
    def done(self) -> bool: ...
    def add_done_callback(self, callback: Callable[[], Any]) -> None: ...
    def result(self) -> Tuple[Any, Optional[Dict[str, Any]], Optional[BaseException]]: ...

def start_deploy(
    request: Mapping[str, Any],
    steps: Sequence[Mapping[str, Any]],
    ssh: Mapping[str, Any],
    *,
    stepfile: Optional[str] = None,
    keep_on_failure: bool = False,
    on_output: Optional[Callable[[str, str, str], Any]] = None,
    at_exit_func: Optional[Callable[[Dict[str, Any]], Any]] = None,
    journal: Optional[str] = None,
) -> Task: ...
def start_run(
    hosts: Sequence[str],
    steps: Sequence[Mapping[str, Any]],
    ssh: Mapping[str, Any],
    *,
    stepfile: Optional[str] = None,
    parallel: Optional[int] = None,
    created: bool = False,
    on_output: Optional[Callable[[str, str, str], Any]] = None,
    journal: Optional[str] = None,
) -> Task: ...
def start_call(provider: str, call: Mapping[str, Any], settings: Optional[Mapping[str, Any]] = None) -> Task: ...
def load_stepfile(path: str) -> Dict[str, Any]: ...
def check_ssh(ssh: Mapping[str, Any]) -> None: ...
