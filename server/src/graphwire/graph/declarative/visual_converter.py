"""A steps-based workflow document ↔ a ReactFlow canvas.

Step ``i`` of the main workflow (``domain.main_workflow``, else ``main``) is node
``node-{i}``; consecutive steps are joined by edge ``edge-{i-1}-{i}`` (``smoothstep``),
labelled with the later step's ``when`` condition. The automatic layout puts node ``i``
at ``(250, 120·i)`` (vertical) or ``(250·i, 100)`` (horizontal). Going back, nodes are
read in their visual order and the canvas is kept in the document's ``canvas`` section,
which `VisualConverter.yaml_to_reactflow` then returns as it is.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

__all__ = ["VisualConverter", "canvas_to_yaml", "yaml_to_canvas"]

_VIEWPORT = {"x": 0, "y": 0, "zoom": 1}


def _viewport() -> dict[str, Any]:
    return dict(_VIEWPORT)


def _position(node: Mapping[str, Any], axis: str) -> Any:
    return node.get("position", {}).get(axis, 0)


class VisualConverter:
    """Converts a document's main workflow steps to a ReactFlow canvas and back."""

    NODE_STYLES: ClassVar[dict[str, dict[str, str]]] = {
        "llm": {"color": "#48BB78", "icon": "🤖", "label": "LLM"},
        "transform": {"color": "#ED8936", "icon": "🔄", "label": "Transform"},
        "condition": {"color": "#9F7AEA", "icon": "❓", "label": "Condition"},
        "extract": {"color": "#4299E1", "icon": "📥", "label": "Extract"},
        "validate": {"color": "#38B2AC", "icon": "✓", "label": "Validate"},
        "parallel": {"color": "#805AD5", "icon": "⚡", "label": "Parallel"},
        "batch": {"color": "#DD6B20", "icon": "📦", "label": "Batch"},
        "default": {"color": "#718096", "icon": "⚙", "label": "Node"},
    }
    DEFAULT_Y_SPACING = 120
    DEFAULT_X_OFFSET = 250
    DEFAULT_NODE_WIDTH = 180
    DEFAULT_NODE_HEIGHT = 60
    HORIZONTAL_SPACING = 250
    HORIZONTAL_Y = 100

    def __init__(self) -> None:
        self.y_spacing = self.DEFAULT_Y_SPACING
        self.x_offset = self.DEFAULT_X_OFFSET

    # -- document → canvas ---------------------------------------------------------------

    def yaml_to_reactflow(self, yaml_dict: Mapping[str, Any]) -> dict[str, Any]:
        """The document's saved ``canvas``, else one laid out vertically from its steps."""
        canvas = yaml_dict.get("canvas")
        if canvas is not None:
            return {
                "nodes": canvas.get("nodes", []),
                "edges": canvas.get("edges", []),
                "viewport": canvas.get("viewport", _viewport()),
            }
        main = (yaml_dict.get("domain") or {}).get("main_workflow", "main")
        steps = (yaml_dict.get("workflows") or {}).get(main, {}).get("steps", [])
        return self.generate_auto_layout(steps)

    def generate_auto_layout(self, steps: Sequence[Mapping[str, Any]], layout_type: str = "vertical") -> dict[str, Any]:
        """A canvas of ``steps`` in a column (``"vertical"``, also for unknown types) or a row."""
        nodes: list[dict[str, Any]] = []
        edges: list[dict[str, Any]] = []
        for index, step in enumerate(steps):
            if layout_type == "horizontal":
                position = {"x": index * self.HORIZONTAL_SPACING, "y": self.HORIZONTAL_Y}
            else:
                position = {"x": self.x_offset, "y": index * self.y_spacing}
            nodes.append(self._create_reactflow_node(f"node-{index}", step, position))
            if index > 0:
                edge_id = f"edge-{index - 1}-{index}"
                edges.append(
                    self._create_reactflow_edge(edge_id, f"node-{index - 1}", f"node-{index}", step.get("when"))
                )
        return {"nodes": nodes, "edges": edges, "viewport": _viewport()}

    def _create_reactflow_node(self, node_id: str, step: Mapping[str, Any], position: dict[str, int]) -> dict[str, Any]:
        node_type = step.get("type", "default")
        style = self.NODE_STYLES.get(node_type, self.NODE_STYLES["default"])
        return {
            "id": node_id,
            "type": node_type,
            "position": position,
            "data": {
                "label": step.get("name", step.get("description", style["label"])),
                "config": step.get("config", {}),
                "icon": style["icon"],
                "color": style["color"],
                "description": step.get("description"),
                "inputs": step.get("inputs", []),
                "outputs": step.get("outputs", []),
                "concept": step.get("concept") or step.get("output_concept"),
            },
            "style": {
                "background": style["color"],
                "color": "#ffffff",
                "border": "1px solid #00000020",
                "borderRadius": "8px",
                "padding": "10px",
                "width": self.DEFAULT_NODE_WIDTH,
                "height": self.DEFAULT_NODE_HEIGHT,
            },
        }

    def _create_reactflow_edge(
        self, edge_id: str, source: str, target: str, label: str | None = None
    ) -> dict[str, Any]:
        edge: dict[str, Any] = {
            "id": edge_id,
            "source": source,
            "target": target,
            "type": "smoothstep",
            "animated": False,
        }
        if label:
            edge["label"] = label
            edge["labelStyle"] = {"fill": "#9F7AEA", "fontWeight": 700}
        return edge

    # -- canvas → document ---------------------------------------------------------------

    def reactflow_to_yaml(
        self, canvas: Mapping[str, Any], existing_yaml: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """A document whose main workflow's steps come from ``canvas``, which it keeps too.

        ``existing_yaml`` (left unchanged) provides everything else, including the main
        workflow's other keys; without it the domain is ``workflow`` 1.0.
        """
        if existing_yaml:
            result = copy.deepcopy(dict(existing_yaml))
        else:
            result = {"domain": {"name": "workflow", "version": "1.0"}, "workflows": {}}
        result["canvas"] = {
            "viewport": canvas.get("viewport", _viewport()),
            "nodes": canvas.get("nodes", []),
            "edges": canvas.get("edges", []),
        }
        main = (result.get("domain") or {}).get("main_workflow", "main")
        workflows = result.setdefault("workflows", {})
        workflows[main] = {**workflows.get(main, {}), "steps": self._canvas_to_steps(canvas)}
        return result

    def _canvas_to_steps(self, canvas: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One step per node, top to bottom (left to right on a horizontal canvas)."""
        nodes = canvas.get("nodes", [])
        edges = canvas.get("edges", [])
        axis = "x" if self.detect_layout_type(canvas) == "horizontal" else "y"
        ordered = sorted(nodes, key=lambda node: _position(node, axis))
        return [self._node_to_step(node, edges) for node in ordered]

    def _node_to_step(self, node: Mapping[str, Any], edges: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        data = node.get("data", {})
        step: dict[str, Any] = {"type": node.get("type", "default")}
        for data_key, step_key in (
            ("label", "name"),
            ("description", "description"),
            ("config", "config"),
            ("outputs", "outputs"),
            ("inputs", "inputs"),
            ("concept", "output_concept"),
        ):
            if data.get(data_key):
                step[step_key] = data[data_key]
        condition = next(
            (edge["label"] for edge in edges if edge.get("target") == node["id"] and edge.get("label")), None
        )
        if condition:
            step["when"] = condition
        return step

    def detect_layout_type(self, canvas: Mapping[str, Any]) -> str:
        """``"vertical"`` (x spread under 100, or ≤ 1 node), ``"horizontal"`` (y spread under 100) or ``"complex"``."""
        nodes = canvas.get("nodes", [])
        if len(nodes) <= 1:
            return "vertical"
        xs = [_position(node, "x") for node in nodes]
        ys = [_position(node, "y") for node in nodes]
        if max(xs) - min(xs) < 100:
            return "vertical"
        if max(ys) - min(ys) < 100:
            return "horizontal"
        return "complex"


def yaml_to_canvas(yaml_dict: Mapping[str, Any]) -> dict[str, Any]:
    """`VisualConverter.yaml_to_reactflow`."""
    return VisualConverter().yaml_to_reactflow(yaml_dict)


def canvas_to_yaml(canvas: Mapping[str, Any], existing_yaml: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`VisualConverter.reactflow_to_yaml`."""
    return VisualConverter().reactflow_to_yaml(canvas, existing_yaml)
