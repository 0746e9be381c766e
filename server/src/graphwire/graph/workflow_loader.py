"""Workflows defined in a YAML or JSON file (KayGraph's ``workflow_loader``).

A file names the node classes of a workflow and wires them with the ``>>`` syntax::

    domain:
      main_workflow: review        # optional: else the first workflow is loaded
    workflows:
      review:
        description: "Check a request"
        concepts:                  # concept name (the node's id) → node class name
          check: CheckNode
          approve: ApproveNode
          reject: RejectNode
        graph: |
          check - "approve" >> approve
          check - "reject" >> reject

`load_workflow` builds the main workflow as a `Graph` whose start node is the first name
of the graph, `validate_workflow` lists a file's mistakes without importing anything, and
`export_workflow` / `graph_to_yaml` write a graph back in the same format (node ids become
concept names, class names the concepts; constructor arguments are not kept).

Beyond KayGraph, whose loader reads one ``a >> b >> c`` chain: ``- "action" >>`` names
the action of a transition, and the graph may hold one chain per line, so a workflow can
branch; a graph of a single name is a one-node workflow.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from ._graph import Graph
from ._node import DEFAULT_ACTION, BaseNode

__all__ = [
    "discover_node_class",
    "export_workflow",
    "graph_to_yaml",
    "load_workflow",
    "load_yaml_file",
    "parse_graph_syntax",
    "validate_workflow",
    "yaml_to_graph",
]

Connection = tuple[str, str, str | None]
"""``(source, target, action)``; action ``None`` is the default action."""

NodeClass = type[BaseNode[Any, Any]]

# Where KayGraph looks for node classes after the caller's own modules.
_CONVENTIONAL_MODULES = ("nodes", "__main__", "app.nodes", "workflow.nodes")

# One side of a ``>>``: a name, optionally followed by ``- "action"`` (or single quotes).
_NAMED_ACTION = re.compile(r"^(?P<name>.*?)\s*-\s*(?P<q>[\"'])(?P<action>.*)(?P=q)$")


# -- reading ---------------------------------------------------------------------------


def load_yaml_file(file_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a ``.json`` file, or in a YAML file (any other name)."""
    path = Path(file_path)
    if not path.exists():
        raise FileNotFoundError(f"Workflow file not found: {file_path}")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        content = json.loads(text)  # a json.JSONDecodeError (a ValueError) says where
        kind = "JSON"
    else:
        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ValueError(f"Invalid YAML in {file_path}: {exc}") from exc
        kind = "YAML"
    if not isinstance(content, dict):
        raise ValueError(f"{kind} content must be a dictionary, got {type(content).__name__} in {file_path}")
    return content


def _node_class_in(module: object, name: str) -> NodeClass | None:
    try:
        candidate = vars(module).get(name)  # not getattr: no module __getattr__ side effects
    except TypeError:
        return None
    if isinstance(candidate, type) and issubclass(candidate, BaseNode):
        return candidate
    return None


def _import_if_present(module_name: str) -> object | None:
    """The module, or ``None`` when there is no such module; a broken module still raises."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            return None
        raise


def discover_node_class(node_type: str, search_modules: list[str] | None = None) -> NodeClass:
    """The `BaseNode` subclass called ``node_type``.

    Looked up, in order, in ``search_modules`` (imported if needed), then in the modules
    KayGraph apps conventionally use (``nodes``, ``__main__``, ``app.nodes``,
    ``workflow.nodes``), then among every module already imported, where the name must
    belong to one class only: with two candidates, name the module in ``search_modules``.
    """
    for module_name in [*(search_modules or []), *_CONVENTIONAL_MODULES]:
        module = _import_if_present(module_name)
        found = _node_class_in(module, node_type) if module is not None else None
        if found is not None:
            return found
    candidates: dict[NodeClass, None] = {}
    for module in list(sys.modules.values()):
        found = _node_class_in(module, node_type)
        if found is not None:
            candidates[found] = None
    if len(candidates) == 1:
        return next(iter(candidates))
    if candidates:
        where = ", ".join(sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in candidates))
        raise ValueError(f"Node class '{node_type}' is ambiguous: {where}; name its module in search_modules to choose")
    raise ValueError(
        f"Node class '{node_type}' not found. Import the module that defines it before loading"
        " the workflow, or name that module in search_modules."
    )


def _parse(graph_str: str, concepts: Mapping[str, Any]) -> tuple[str | None, list[Connection]]:
    """The start node's name (the first one written) and the connections of ``graph_str``."""
    start: str | None = None
    connections: list[Connection] = []
    for line in str(graph_str).splitlines():
        if not line.strip():
            continue
        parts = line.split(">>")
        names: list[str] = []
        actions: list[str | None] = []
        for index, part in enumerate(parts):
            match = _NAMED_ACTION.match(part.strip())
            if match is None:
                names.append(part.strip())
                actions.append(None)
                continue
            if index == len(parts) - 1:
                raise ValueError(f"Action '{match['action']}' of node '{match['name']}' leads nowhere (no '>>')")
            if not match["action"]:
                raise ValueError(f"Empty action after node '{match['name']}'")
            names.append(match["name"])
            actions.append(match["action"])
        for name in names:
            if name not in concepts:
                raise ValueError(f"Node '{name}' not defined in concepts")
        start = start if start is not None else names[0]
        connections += zip(names, names[1:], actions, strict=False)
    return start, connections


def parse_graph_syntax(graph_str: str, concepts: Mapping[str, Any]) -> list[Connection]:
    """The ``(source, target, action)`` connections of a ``graph:`` string, in order.

    Each line is a chain ``a >> b - "action" >> c``; every name must be a concept.
    """
    return _parse(graph_str, concepts)[1]


def _declared_main(content: Mapping[str, Any]) -> Any:
    domain = content.get("domain")
    return domain.get("main_workflow") if isinstance(domain, Mapping) else None


def _main_workflow(content: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]]:
    if "workflows" not in content:
        raise ValueError("YAML must contain 'workflows' section")
    workflows = content["workflows"]
    if not isinstance(workflows, Mapping) or not workflows:
        raise ValueError("No workflows defined: 'workflows' must map names to workflows")
    name = _declared_main(content) or next(iter(workflows))
    if name not in workflows:
        raise ValueError(f"Main workflow '{name}' not found")
    workflow = workflows[name]
    if not isinstance(workflow, Mapping):
        raise ValueError(f"Workflow '{name}' must be a mapping")
    return name, workflow


def yaml_to_graph(yaml_content: Mapping[str, Any], search_modules: list[str] | None = None) -> Graph:
    """The `Graph` of a parsed workflow file's main workflow.

    Each concept becomes one node, built as ``NodeClass(node_id=concept_name)``.
    """
    name, workflow = _main_workflow(yaml_content)
    concepts = workflow.get("concepts") or {}
    if not concepts:
        raise ValueError(f"Workflow '{name}' must define 'concepts'")
    graph_def = workflow.get("graph") or ""
    if not graph_def:
        raise ValueError(f"Workflow '{name}' must define 'graph'")
    start, connections = _parse(graph_def, concepts)
    if start is None:
        raise ValueError(f"Workflow '{name}' must define 'graph'")
    nodes: dict[str, BaseNode[Any, Any]] = {}
    for concept, class_name in concepts.items():
        if not isinstance(class_name, str):
            raise ValueError(f"Concept '{concept}' must name a node class, got {type(class_name).__name__}")
        nodes[concept] = discover_node_class(class_name, search_modules)(node_id=concept)
    for source, target, action in connections:
        if nodes[source].successors.get(action or DEFAULT_ACTION) is not nodes[target]:
            nodes[source].next(nodes[target], action or DEFAULT_ACTION)
    return Graph(start=nodes[start])


def load_workflow(file_path: str | os.PathLike[str], search_modules: list[str] | None = None) -> Graph:
    """The `Graph` of a workflow file's main workflow (see `yaml_to_graph`)."""
    return yaml_to_graph(load_yaml_file(file_path), search_modules)


def validate_workflow(file_path: str | os.PathLike[str]) -> list[str]:
    """A workflow file's mistakes, one message each; empty when it is valid.

    Checks the file, its sections and its graphs; node classes are not looked up.
    """
    if not Path(file_path).exists():
        return [f"File not found: {file_path}"]
    try:
        content = load_yaml_file(file_path)
    except Exception as exc:
        return [f"Failed to load YAML: {exc}"]
    if "workflows" not in content:
        return ["Missing 'workflows' section"]
    workflows = content["workflows"]
    if not workflows:
        return ["No workflows defined"]
    if not isinstance(workflows, Mapping):
        return ["'workflows' must map names to workflows"]
    errors: list[str] = []
    main = _declared_main(content)
    if main is not None and main not in workflows:
        errors.append(f"Main workflow '{main}' not found")
    for name, workflow in workflows.items():
        problem = _workflow_problem(workflow)
        if problem:
            errors.append(f"Workflow '{name}': {problem}")
    return errors


def _workflow_problem(workflow: Any) -> str | None:
    if not isinstance(workflow, Mapping):
        return "must be a mapping"
    if "concepts" not in workflow:
        return "Missing 'concepts' section"
    if not workflow["concepts"]:
        return "No concepts defined"
    if "graph" not in workflow:
        return "Missing 'graph' section"
    if not workflow["graph"] or not str(workflow["graph"]).strip():
        return "Empty graph definition"
    try:
        _parse(workflow["graph"], workflow["concepts"])
    except ValueError as exc:
        return str(exc)
    return None


# -- writing ---------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """Writes a multi-line string (a branching graph) as a ``|`` block, one chain a line."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def _reachable(start: BaseNode[Any, Any]) -> list[BaseNode[Any, Any]]:
    """Every node reachable from ``start``, breadth first; node ids must be unique."""
    order = [start]
    seen = {start.node_id: start}
    for node in order:  # grows while it is walked
        for action, successor in node.successors.items():
            _check_writable("action", action)
            other = seen.get(successor.node_id)
            if other is None:
                seen[successor.node_id] = successor
                order.append(successor)
            elif other is not successor:
                raise ValueError(f"Cannot export: two nodes share the node_id '{successor.node_id}'")
    for node in order:
        _check_writable("node_id", node.node_id)
    return order


def _check_writable(what: str, text: str) -> None:
    if not text.strip() or ">>" in text or "\n" in text or (what == "node_id" and _NAMED_ACTION.match(text)):
        raise ValueError(f"Cannot export: {what} {text!r} cannot be written in the graph syntax")


def _chains(nodes: list[BaseNode[Any, Any]]) -> Iterator[str]:
    """The graph as chains that together use every transition once."""
    pending = {id(node): list(node.successors.items()) for node in nodes}
    for node in nodes:
        while pending[id(node)]:
            chain, current = node.node_id, node
            while pending[id(current)]:
                action, successor = pending[id(current)].pop(0)
                label = "" if action == DEFAULT_ACTION else f' - "{action}"'
                chain += f"{label} >> {successor.node_id}"
                current = successor
            yield chain


def graph_to_yaml(graph: BaseNode[Any, Any], workflow_name: str = "main") -> str:
    """A workflow file (YAML) for ``graph``, a `Graph` or its start node.

    A linear graph is one chain (``a >> b >> c``); a branching one is written one chain
    per line, named actions as ``- "action" >>``.
    """
    start = graph.start_node if isinstance(graph, Graph) else graph
    if not isinstance(start, BaseNode):
        raise ValueError(f"Cannot export: invalid start node type {type(start)}")
    nodes = _reachable(start)
    chains = list(_chains(nodes))
    document = {
        "workflows": {
            workflow_name: {
                "description": f"Exported workflow: {workflow_name}",
                "concepts": {node.node_id: type(node).__name__ for node in nodes},
                "graph": "\n".join(chains) if chains else start.node_id,
            }
        }
    }
    return yaml.dump(document, Dumper=_Dumper, default_flow_style=False, sort_keys=False, allow_unicode=True)


def export_workflow(
    graph: BaseNode[Any, Any], output_path: str | os.PathLike[str], workflow_name: str = "main"
) -> None:
    """Write `graph_to_yaml` to ``output_path`` (creating its folder) and say so on stdout."""
    path = Path(output_path)
    text = graph_to_yaml(graph, workflow_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"✓ Workflow exported to: {output_path}")
