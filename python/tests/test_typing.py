"""The package's types as a type checker sees them (mypy --strict): a user's program checks clean,
and the mistakes in bad.py are each caught on their line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent / "typing"


def mypy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", *args], capture_output=True, text=True, timeout=300)


def test_the_package_and_a_user_program_type_check() -> None:
    for args in (["-p", "nodeup"], [str(HERE / "good.py")]):
        result = mypy(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_mistakes_are_caught_by_the_type_checker() -> None:
    result = mypy(str(HERE / "bad.py"))
    lines = sorted({int(m) for m in re.findall(r"bad\.py:(\d+): error", result.stdout)})
    assert lines == [6, 7, 8, 9], result.stdout
