"""Mistakes a type checker catches through nodeup's types (each line is one)."""

import nodeup
from nodeup import ScriptDeployment

nodeup.deploy_node(name="web-1", deploy=ScriptDeployment("true"), ssh_port="22")
nodeup.deploy_node(name="web-1", deploy="echo hi")
ScriptDeployment("true", timeout="soon")
count: int = nodeup.list_nodes("local")
