"""Domains, graphs and workflow dicts as steps-based YAML documents.

A document has a ``domain`` header (``name``, ``version``, optional ``description`` and
``main_workflow``), optional ``concepts``, ``workflows`` (name → ``{"steps": [...]}``),
and, with ``include_metadata``, a ``metadata`` section first. A domain is any object with
the attributes of `Domain`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from .._config import Config
from .._graph import Graph
from .._node import DEFAULT_ACTION, BaseNode

__all__ = ["Domain", "WorkflowSerializer", "save_domain", "serialize_domain", "serialize_workflow"]

_VIEWPORT = {"x": 0, "y": 0, "zoom": 1}

# Optional node attributes that become step fields: (attribute, step key).
_STEP_FIELDS = (
    ("result_name", "outputs"),
    ("input_names", "inputs"),
    ("output_concept", "output_concept"),
    ("concept_name", "concept"),
)


class Domain(Protocol):
    """What the serializer reads from a domain object."""

    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def description(self) -> str | None: ...
    @property
    def main_workflow(self) -> str | None: ...
    @property
    def concepts(self) -> Mapping[str, Any]: ...
    @property
    def workflows(self) -> Mapping[str, Any]: ...


def _dump(data: Any, **options: Any) -> str:
    return str(yaml.dump(data, **{"default_flow_style": False, "sort_keys": False, "allow_unicode": True, **options}))


class WorkflowSerializer:
    """Converts domains, graphs and workflow configurations to steps-based YAML and back."""

    def __init__(self) -> None:
        self.include_metadata = True
        self.preserve_visual_layout = True

    # -- domains ---------------------------------------------------------------------

    def domain_to_dict(self, domain: Domain) -> dict[str, Any]:
        """The document of ``domain``: its header, concepts and workflows."""
        header: dict[str, Any] = {"name": domain.name, "version": domain.version}
        if domain.description:
            header["description"] = domain.description
        if domain.main_workflow:
            header["main_workflow"] = domain.main_workflow
        result: dict[str, Any] = {"domain": header}
        if domain.concepts:
            result["concepts"] = {
                name: concept.to_dict() if hasattr(concept, "to_dict") else concept
                for name, concept in domain.concepts.items()
            }
        if domain.workflows:
            result["workflows"] = dict(domain.workflows)
        return result

    def domain_to_yaml(self, domain: Domain, include_metadata: bool = False) -> str:
        """`domain_to_dict` as YAML, after a ``metadata`` section if asked for."""
        data = self.domain_to_dict(domain)
        if include_metadata:
            metadata = {
                "title": domain.name.replace("_", " ").title(),
                "description": domain.description or f"Domain: {domain.name}",
                "version": domain.version,
                "deployment": {"cli": {"enabled": True}, "api": {"enabled": False}, "claude_code": {"enabled": True}},
            }
            data = {"metadata": metadata, **data}
        return _dump(data)

    def save_domain_to_file(
        self, domain: Domain, file_path: str | os.PathLike[str], include_metadata: bool = True
    ) -> None:
        """Write `domain_to_yaml` to ``file_path``, creating its folder."""
        path = Path(file_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.domain_to_yaml(domain, include_metadata=include_metadata), encoding="utf-8")

    def load_domain_from_file(self, file_path: str | os.PathLike[str]) -> dict[str, Any]:
        """The document in a YAML file, as a dict (not a domain object)."""
        return self.yaml_to_dict(Path(file_path).read_text(encoding="utf-8"))

    # -- graphs and workflows ----------------------------------------------------------

    def graph_to_workflow_dict(self, graph: BaseNode[Any, Any], workflow_name: str = "main") -> dict[str, Any]:
        """``{"steps": [...]}`` for a `Graph` (or a start node): one step per node.

        Follows the default action from the start node, each node once; nodes reached
        only by named actions are not steps (the steps format is a sequence).
        """
        node = graph.start_node if isinstance(graph, Graph) else graph
        steps: list[dict[str, Any]] = []
        seen: set[int] = set()
        while node is not None and id(node) not in seen:
            seen.add(id(node))
            steps.append(self._node_to_step(node))
            node = node.successors.get(DEFAULT_ACTION)
        return {"steps": steps}

    def _node_to_step(self, node: BaseNode[Any, Any]) -> dict[str, Any]:
        kind = str(getattr(node, "node_type", None) or type(node).__name__)
        step: dict[str, Any] = {"type": kind.lower().replace("node", "").replace("config", "") or "default"}
        if node.node_id:
            step["name"] = node.node_id
        description = getattr(node, "description", None)
        if description:
            step["description"] = description
        config = node.config.to_dict() if isinstance(node.config, Config) else dict(node.config or {})
        if config:
            for redundant in ("type", "node_id", "description"):
                config.pop(redundant, None)
            step["config"] = config
        for attribute, key in _STEP_FIELDS:
            value = getattr(node, attribute, None)
            if value:
                step[key] = [value] if attribute == "result_name" else value
        return step

    def workflow_to_yaml(
        self, workflow_config: Mapping[str, Any], domain_name: str = "workflow", domain_version: str = "1.0"
    ) -> str:
        """A document whose ``main`` workflow is ``workflow_config``."""
        data = {"domain": {"name": domain_name, "version": domain_version}, "workflows": {"main": workflow_config}}
        return _dump(data)

    # -- YAML and visual layout ----------------------------------------------------------

    def dict_to_yaml(self, data: Mapping[str, Any], **yaml_options: Any) -> str:
        """``data`` as block-style YAML in insertion order; ``yaml_options`` go to ``yaml.dump``."""
        return _dump(data, **{"indent": 2, **yaml_options})

    def yaml_to_dict(self, yaml_str: str) -> dict[str, Any]:
        """The mapping in ``yaml_str`` (``{}`` when empty); other documents raise ValueError."""
        data = yaml.safe_load(yaml_str)
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ValueError(f"a workflow document must be a mapping, not {type(data).__name__}")
        return data

    def add_visual_layout(self, domain_dict: Mapping[str, Any], visual_data: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``domain_dict`` with a ``canvas`` section from a ReactFlow canvas."""
        canvas = {
            "viewport": visual_data.get("viewport", dict(_VIEWPORT)),
            "nodes": visual_data.get("nodes", []),
            "edges": visual_data.get("edges", []),
        }
        return {**domain_dict, "canvas": canvas}

    def extract_visual_layout(self, domain_dict: Mapping[str, Any]) -> dict[str, Any] | None:
        """The ``canvas`` section of a document (``viewport``, ``nodes``, ``edges``), if any."""
        canvas = domain_dict.get("canvas")
        if canvas is None:
            return None
        return {"viewport": canvas.get("viewport"), "nodes": canvas.get("nodes", []), "edges": canvas.get("edges", [])}


def serialize_domain(domain: Domain, include_metadata: bool = False) -> str:
    """`WorkflowSerializer.domain_to_yaml`."""
    return WorkflowSerializer().domain_to_yaml(domain, include_metadata=include_metadata)


def serialize_workflow(workflow_config: Mapping[str, Any], domain_name: str = "workflow") -> str:
    """`WorkflowSerializer.workflow_to_yaml`."""
    return WorkflowSerializer().workflow_to_yaml(workflow_config, domain_name=domain_name)


def save_domain(domain: Domain, file_path: str | os.PathLike[str], include_metadata: bool = True) -> None:
    """`WorkflowSerializer.save_domain_to_file`."""
    WorkflowSerializer().save_domain_to_file(domain, file_path, include_metadata=include_metadata)
