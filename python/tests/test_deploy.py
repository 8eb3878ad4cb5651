"""nodeup.deploy_node on local nodes (real sshd): every deployment class, failures, streaming,
Ctrl+C, threads and asyncio, bad input, callbacks that raise."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import List, Tuple

import pytest

import nodeup
from nodeup import (
    FileDeployment,
    MultiStepDeployment,
    ScriptDeployment,
    ScriptFileDeployment,
    SSHKeyDeployment,
)

from conftest import Bed

# How long a step that waits for the test may take before the engine ends it: far beyond what
# the wait needs, so that a failure means the test's condition never came true.
STEP_TIMEOUT = 30.0


def deploy(bed: Bed, name: str, steps, **kwargs) -> nodeup.Node:
    return nodeup.deploy_node(name=name, image="debian", deploy=steps, ssh_key=str(bed.key), **kwargs)


def test_every_deployment_class_does_what_it_says(bed: Bed) -> None:
    new_key = bed.new_key("deployer")
    motd = bed.root / "motd"
    motd.write_text("welcome\n")
    script_file = bed.root / "report.sh"
    script_file.write_text('#!/bin/sh\necho "args: $1|$2"\necho "on $(hostname)" >&2\nexit 0\n')
    steps = MultiStepDeployment(
        [
            SSHKeyDeployment(Path(f"{new_key}.pub").read_text()),
            FileDeployment(str(motd), "/etc/motd", mode=0o640),
            ScriptDeployment("cat /etc/motd; echo \"$1\"", args=["it's; $(not run)"]),
            ScriptFileDeployment(str(script_file), args=["a b", "c"]),
        ]
    )
    node = deploy(bed, "py-classes", steps)
    try:
        assert node.state == "running" and node.extra["nodeup_user"] == "root"
        # The new key logs in (host key as nodeup recorded it).
        login = bed.ssh(node, "stat -c '%a %s' /etc/motd; cat /etc/motd", key=new_key)
        assert login.returncode == 0, login.stderr
        assert login.stdout == "640 8\nwelcome\n"
        script, script_from_file = steps.steps[2], steps.steps[3]
        assert script.stdout == "welcome\nit's; $(not run)\n" and script.exit_status == 0
        assert script_from_file.stdout == "args: a b|c\n"
        assert script_from_file.stderr == "on py-classes\n"
        # Nothing of the scripts is left in root's home (delete is on by default).
        leftovers = bed.ssh(node, "ls -A /root | grep -v '^.ssh$' || true")
        assert leftovers.stdout == "", leftovers.stdout
    finally:
        assert nodeup.destroy_node("local", node)
    assert bed.nodes() == []


def test_a_failing_script_raises_with_the_node_and_its_output_and_the_node_is_destroyed(bed: Bed) -> None:
    steps = MultiStepDeployment([ScriptDeployment("echo one"), ScriptDeployment("echo out; echo bad >&2; exit 3")])
    with pytest.raises(nodeup.DeploymentError) as raised:
        deploy(bed, "py-fails", steps)
    error = raised.value
    assert isinstance(error.node, nodeup.Node) and error.node.name == "py-fails"
    assert (error.step, error.step_kind, error.exit_status) == (2, "script", 3)
    assert (error.stdout, error.stderr) == ("out\n", "bad\n")
    assert error.fate == "destroyed"
    assert "failed at step 2 (script): the script ended with exit status 3; stderr: bad" in str(error)
    assert [r.stdout for r in error.completed] == ["one\n"]
    assert steps.steps[1].exit_status == 3 and steps.steps[1].stderr == "bad\n"
    assert bed.nodes() == []


def test_keep_on_failure_keeps_the_node(bed: Bed) -> None:
    with pytest.raises(nodeup.DeploymentError) as raised:
        deploy(bed, "py-kept", ScriptDeployment("exit 1"), keep_on_failure=True)
    assert raised.value.fate == "kept"
    assert [n.name for n in bed.nodes()] == ["py-kept"]
    nodeup.destroy_node("local", raised.value.node)


def _touch_later(bed: Bed, name: str, path: str, after: threading.Event, ran: List[str]) -> threading.Thread:
    """A thread that, once ``after`` is set, finds the node through nodeup and creates ``path`` on
    it with OpenSSH: it needs the GIL while the deployment waits."""

    def work() -> None:
        after.wait(STEP_TIMEOUT)
        node = next(n for n in nodeup.list_nodes("local") if n.name == name)
        result = bed.ssh(node, f"touch {path}")
        ran.append(f"touched: {result.returncode}")

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_output_streams_to_the_callback_before_the_step_ends_and_threads_run_meanwhile(bed: Bed) -> None:
    """The script waits for a file that a Python thread creates once the callback saw the script's
    first line: both the callback and the thread ran while deploy_node waited."""
    started = threading.Event()
    lines: List[Tuple[str, str, str]] = []
    ran: List[str] = []

    def on_output(node: str, stream: str, line: str) -> None:
        lines.append((node, stream, line))
        if line == "waiting":
            started.set()

    thread = _touch_later(bed, "py-stream", "/tmp/go", started, ran)
    script = ScriptDeployment("echo waiting; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo done", timeout=STEP_TIMEOUT)
    node = deploy(bed, "py-stream", script, on_output=on_output)
    thread.join(5)
    assert ran == ["touched: 0"]
    assert lines == [("py-stream", "stdout", "waiting"), ("py-stream", "stdout", "done")]
    assert script.stdout == "waiting\ndone\n"
    nodeup.destroy_node("local", node)


def test_ctrl_c_mid_step_cancels_and_leaves_no_node(bed: Bed) -> None:
    """SIGINT while a script runs: KeyboardInterrupt once the node is destroyed."""

    def on_output(node: str, stream: str, line: str) -> None:
        if line == "started":
            threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()

    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        deploy(bed, "py-ctrl-c", ScriptDeployment("echo started; sleep 60"), on_output=on_output)
    assert time.monotonic() - began < STEP_TIMEOUT
    assert bed.nodes() == []


def test_ctrl_c_hands_the_node_to_at_exit_func(bed: Bed) -> None:
    handed: List[nodeup.Node] = []

    def at_exit(node: nodeup.Node) -> None:
        handed.append(node)
        nodeup.destroy_node("local", node)

    def on_output(node: str, stream: str, line: str) -> None:
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()

    with pytest.raises(KeyboardInterrupt):
        deploy(bed, "py-at-exit", ScriptDeployment("echo started; sleep 60"), on_output=on_output, at_exit_func=at_exit)
    assert [n.name for n in handed] == ["py-at-exit"]
    assert bed.nodes() == []


def test_a_callback_that_raises_is_raised_with_its_traceback_and_the_node_is_cleaned_up(bed: Bed) -> None:
    def on_output(node: str, stream: str, line: str) -> None:
        raise RuntimeError(f"no thanks: {line}")

    with pytest.raises(RuntimeError, match="no thanks: hello") as raised:
        deploy(bed, "py-raises", ScriptDeployment("echo hello; sleep 60"), on_output=on_output)
    frames = [f.name for f in traceback.extract_tb(raised.value.__traceback__)]
    assert "on_output" in frames
    assert bed.nodes() == []


def test_asyncio_runs_two_deployments_at_once(bed: Bed) -> None:
    """Each script waits until both have started: run one after the other, neither would end."""
    seen = set()
    both = threading.Event()

    def on_output(node: str, stream: str, line: str) -> None:
        seen.add(node)
        if len(seen) == 2:
            both.set()

    ran: List[str] = []
    threads = [_touch_later(bed, name, "/tmp/go", both, ran) for name in ("py-async-1", "py-async-2")]
    script = "echo started; while [ ! -e /tmp/go ]; do sleep 0.05; done"

    async def main() -> List[nodeup.Node]:
        return await asyncio.gather(
            *(
                nodeup.deploy_node_async(name=name, image="debian", ssh_key=str(bed.key), on_output=on_output, deploy=ScriptDeployment(script, timeout=STEP_TIMEOUT))
                for name in ("py-async-1", "py-async-2")
            )
        )

    nodes = asyncio.run(main())
    for thread in threads:
        thread.join(5)
    assert sorted(n.name for n in nodes) == ["py-async-1", "py-async-2"]
    assert ran == ["touched: 0", "touched: 0"]
    for node in nodes:
        nodeup.destroy_node("local", node)


def test_cancelling_the_asyncio_task_cleans_up(bed: Bed) -> None:
    async def main() -> None:
        task = asyncio.ensure_future(nodeup.deploy_node_async(name="py-async-cancel", image="debian", ssh_key=str(bed.key), deploy=ScriptDeployment("sleep 60")))
        while not any(n.name == "py-async-cancel" and n.state == "running" for n in nodeup.list_nodes("local")):
            await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert bed.nodes() == []


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"ssh_port": "22"}, TypeError, "ssh_port"),
        ({"ssh_port": 70000}, ValueError, "ssh_port"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"max_tries": 0}, ValueError, "max_tries"),
        ({"ssh_alternate_usernames": "admin"}, TypeError, "ssh_alternate_usernames"),
        ({"on_output": 5}, TypeError, "on_output"),
        ({"host_key_policy": "yes"}, ValueError, "host_key_policy"),
        ({"deploy": 42}, TypeError, "deploy"),
        ({"image": 7}, TypeError, "image"),
        ({"journal": 3}, TypeError, "journal"),
        ({"colour": "blue"}, TypeError, "colour"),
        ({"ssh_key": "/nonexistent/id_ed25519"}, ValueError, r"ssh_key='/nonexistent/id_ed25519'\): cannot be read"),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_created(bed: Bed, kwargs, error, named) -> None:
    arguments = {"name": "py-bad", "image": "debian", "deploy": ScriptDeployment("true"), "ssh_key": str(bed.key)}
    arguments.update(kwargs)
    with pytest.raises(error, match=named):
        nodeup.deploy_node(**arguments)
    assert bed.nodes() == []


def test_a_step_that_cannot_run_is_refused_before_anything_is_created(bed: Bed) -> None:
    with pytest.raises(ValueError, match=r"step 2 \(file\).*missing\.txt"):
        deploy(bed, "py-bad-file", [ScriptDeployment("true"), FileDeployment(str(bed.root / "missing.txt"), "/tmp/x")])
    with pytest.raises(TypeError, match="timeout"):
        ScriptDeployment("true", timeout="soon")
    with pytest.raises(ValueError, match="mode"):
        FileDeployment("a", "/b", mode=0o17777)
    assert bed.nodes() == []


def test_an_unknown_image_is_a_provider_error_naming_the_choices(bed: Bed) -> None:
    with pytest.raises(nodeup.ProviderError) as raised:
        nodeup.deploy_node(name="py-no-image", image="windows", deploy=ScriptDeployment("true"), ssh_key=str(bed.key))
    assert "windows" in str(raised.value) and "cloud-debian" in str(raised.value)
    assert bed.nodes() == []
