"""nodeup.run on machines that exist, step files, and the providers' calls."""

from __future__ import annotations

from typing import List, Tuple

import pytest

import nodeup
from nodeup import ScriptDeployment

from conftest import Bed


def test_run_on_existing_machines_checks_host_keys_and_reports_each_host(bed: Bed) -> None:
    nodes = [
        nodeup.create_node("local", name, image="debian", ssh_public_key=bed.public_key)
        for name in ("py-run-1", "py-run-2")
    ]
    hosts = [n.public_ips[0] for n in nodes]
    script = ScriptDeployment("hostname")
    lines: List[Tuple[str, str, str]] = []
    # Unknown host keys are refused: nodeup run's default is strict.
    refused = nodeup.run(hosts, script, ssh_key=str(bed.key), known_hosts=str(bed.known_hosts))
    assert [r.ok for r in refused] == [False, False]
    assert all("host key" in str(r.error) for r in refused), [str(r.error) for r in refused]
    # Recorded on first use when asked, then checked.
    for policy in ("accept-new", "strict"):
        results = nodeup.run(
            hosts + ["127.0.0.1:1"],
            script,
            ssh_key=str(bed.key),
            known_hosts=str(bed.known_hosts),
            host_key_policy=policy,
            timeout=2,
            on_output=lambda host, stream, line: lines.append((host, stream, line)),
        )
        assert [(r.host, r.ok, r.user) for r in results] == [(hosts[0], True, "root"), (hosts[1], True, "root"), ("127.0.0.1:1", False, "")]
        assert [r.steps[0].stdout for r in results[:2]] == ["py-run-1\n", "py-run-2\n"]
        assert "could not log in" in str(results[2].error)
    assert sorted(lines) == sorted([(hosts[0], "stdout", "py-run-1"), (hosts[1], "stdout", "py-run-2")] * 2)
    recorded = bed.known_hosts.read_text()
    assert all(h in recorded for h in hosts)
    for node in nodes:
        nodeup.destroy_node("local", node)


def test_a_step_file_loads_into_deployment_classes_and_deploys_with_its_sections(bed: Bed) -> None:
    path = bed.root / "web.toml"
    path.write_text(
        f"""
[node]
name = "py-stepfile"
image = "cloud-debian"

[ssh]
keys = ["{bed.key}"]
username = "debian"

[[step]]
inline = "echo hello from $(whoami)"

[[step]]
inline = "id -u"
sudo = true
"""
    )
    loaded = nodeup.load_stepfile(path)
    assert (loaded.name, loaded.image) == ("py-stepfile", "cloud-debian")
    assert [type(s).__name__ for s in loaded.steps] == ["ScriptDeployment", "ScriptDeployment"]
    assert loaded.steps[1].sudo
    node = nodeup.deploy_node(deploy=loaded)
    assert node.name == "py-stepfile" and node.extra["nodeup_user"] == "debian"
    assert [s.stdout for s in loaded.steps] == ["hello from debian\n", "0\n"]
    nodeup.destroy_node("local", node)


def test_a_step_file_error_names_the_file_and_line(bed: Bed) -> None:
    path = bed.root / "bad.toml"
    path.write_text('[[step]]\ninline = "true"\n\n[[step]]\ninlin = "true"\n')
    with pytest.raises(ValueError, match=r"bad\.toml:5"):
        nodeup.load_stepfile(path)


def test_provider_calls(bed: Bed) -> None:
    assert [loc.id for loc in nodeup.list_locations("local")] == ["local"]
    assert {i.id for i in nodeup.list_images("local")} >= {"debian", "cloud-debian"}
    assert {s.id for s in nodeup.list_sizes("local")} >= {"small", "medium", "large"}
    node = nodeup.create_node("local", "py-calls", image="debian", ssh_public_key=bed.public_key)
    assert nodeup.get_node("local", node.id).name == "py-calls"
    assert nodeup.destroy_node("local", node.id)
    with pytest.raises(nodeup.NotFoundError):
        nodeup.get_node("local", node.id)
    with pytest.raises(nodeup.ProviderError, match="nephoscale|unknown|provider"):
        nodeup.list_nodes("no-such-provider")
