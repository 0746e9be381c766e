"""Tests for `graphwire.graph.declarative`: steps-based documents and their ReactFlow canvas."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

# isort: split
from graphwire.graph import Config, Graph, Node
from graphwire.graph.declarative import (
    VisualConverter,
    WorkflowSerializer,
    canvas_to_yaml,
    save_domain,
    serialize_domain,
    serialize_workflow,
    yaml_to_canvas,
)

# -- serializer -------------------------------------------------------------------------------


@dataclass
class Concept:
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {"description": self.description, "type": "text"}


@dataclass
class Domain:
    name: str = "invoice_review"
    version: str = "2.1"
    description: str | None = "Review invoices"
    main_workflow: str | None = "review"
    concepts: dict[str, Any] = field(default_factory=dict)
    workflows: dict[str, Any] = field(default_factory=dict)


REVIEW_STEPS: list[dict[str, Any]] = [
    {"type": "extract", "name": "read", "outputs": ["invoice"]},
    {"type": "llm", "name": "judge", "inputs": ["invoice"], "config": {"model": "small"}, "output_concept": "Verdict"},
    {"type": "transform", "name": "pay", "when": "approved", "description": "Pay it"},
]


def test_domain_to_dict_keeps_header_concepts_and_workflows() -> None:
    domain = Domain(
        concepts={"Invoice": Concept("A bill"), "Verdict": {"description": "ok or not"}},
        workflows={"review": {"steps": REVIEW_STEPS}},
    )
    assert WorkflowSerializer().domain_to_dict(domain) == {
        "domain": {
            "name": "invoice_review",
            "version": "2.1",
            "description": "Review invoices",
            "main_workflow": "review",
        },
        "concepts": {"Invoice": {"description": "A bill", "type": "text"}, "Verdict": {"description": "ok or not"}},
        "workflows": {"review": {"steps": REVIEW_STEPS}},
    }
    bare = Domain(description=None, main_workflow=None)
    assert WorkflowSerializer().domain_to_dict(bare) == {"domain": {"name": "invoice_review", "version": "2.1"}}


def test_serialize_domain_with_and_without_metadata() -> None:
    domain = Domain(workflows={"review": {"steps": REVIEW_STEPS}})
    plain = serialize_domain(domain)
    assert plain.startswith("domain:\n  name: invoice_review\n")
    assert yaml.safe_load(plain) == WorkflowSerializer().domain_to_dict(domain)
    with_metadata = yaml.safe_load(serialize_domain(domain, include_metadata=True))
    assert next(iter(with_metadata)) == "metadata"
    assert with_metadata["metadata"] == {
        "title": "Invoice Review",
        "description": "Review invoices",
        "version": "2.1",
        "deployment": {"cli": {"enabled": True}, "api": {"enabled": False}, "claude_code": {"enabled": True}},
    }
    unnamed = yaml.safe_load(serialize_domain(Domain(description=None), include_metadata=True))
    assert unnamed["metadata"]["description"] == "Domain: invoice_review"


def test_save_domain_writes_a_loadable_file(tmp_path: Path) -> None:
    domain = Domain(workflows={"review": {"steps": REVIEW_STEPS}})
    path = tmp_path / "deep" / "invoice.kg.yaml"
    save_domain(domain, path)  # metadata by default
    loaded = WorkflowSerializer().load_domain_from_file(path)
    assert list(loaded) == ["metadata", "domain", "workflows"]
    assert loaded["workflows"]["review"]["steps"] == REVIEW_STEPS
    WorkflowSerializer().save_domain_to_file(domain, path, include_metadata=False)
    assert "metadata" not in WorkflowSerializer().load_domain_from_file(path)


def test_serialize_workflow_wraps_a_main_workflow() -> None:
    text = serialize_workflow({"steps": REVIEW_STEPS}, domain_name="solo")
    assert yaml.safe_load(text) == {
        "domain": {"name": "solo", "version": "1.0"},
        "workflows": {"main": {"steps": REVIEW_STEPS}},
    }
    versioned = WorkflowSerializer().workflow_to_yaml({"steps": []}, domain_version="3")
    assert yaml.safe_load(versioned)["domain"] == {"name": "workflow", "version": "3"}


class ExtractNode(Node[Any, Any]):
    result_name = "invoice"


class SummaryLLMConfigNode(Node[Any, Any]):
    description = "Sum up"
    input_names = ["invoice"]  # noqa: RUF012 (the attribute the serializer reads)
    output_concept = "Summary"
    concept_name = "Bill"


class FinalNode(Node[Any, Any]):
    pass


def test_graph_to_workflow_dict_walks_a_core_graph() -> None:
    read = ExtractNode(node_id="read")
    judge = SummaryLLMConfigNode(node_id="judge", config=Config(model="small", type="x", node_id="y"))
    done = FinalNode(node_id="done")
    side = FinalNode(node_id="side")
    read >> judge >> done
    judge - "escalate" >> side  # not on the default path: no step
    done >> read  # a cycle ends the walk
    steps = WorkflowSerializer().graph_to_workflow_dict(Graph(start=read))
    assert steps == {
        "steps": [
            {"type": "extract", "name": "read", "outputs": ["invoice"]},
            {
                "type": "summaryllm",
                "name": "judge",
                "description": "Sum up",
                "config": {"model": "small"},
                "inputs": ["invoice"],
                "output_concept": "Summary",
                "concept": "Bill",
            },
            {"type": "final", "name": "done"},
        ]
    }
    assert WorkflowSerializer().graph_to_workflow_dict(done)["steps"][0] == {"type": "final", "name": "done"}
    assert WorkflowSerializer().graph_to_workflow_dict(Graph()) == {"steps": []}
    plain = WorkflowSerializer().graph_to_workflow_dict(Graph(start=Node(node_id="n")))
    assert plain == {"steps": [{"type": "default", "name": "n"}]}


def test_dict_and_yaml_conversions() -> None:
    serializer = WorkflowSerializer()
    data = {"z": 1, "a": {"list": [1, 2]}, "text": "é"}
    text = serializer.dict_to_yaml(data)
    assert text == "z: 1\na:\n  list:\n  - 1\n  - 2\ntext: é\n"  # insertion order, unicode kept
    assert serializer.dict_to_yaml(data, indent=4, sort_keys=True).startswith("a:\n    list:")
    assert serializer.yaml_to_dict(text) == data
    assert serializer.yaml_to_dict("") == {}
    with pytest.raises(ValueError, match="must be a mapping, not list"):
        serializer.yaml_to_dict("- 1\n")
    with pytest.raises(yaml.YAMLError):
        serializer.yaml_to_dict("a: [1\n")


def test_visual_layout_is_added_and_extracted() -> None:
    serializer = WorkflowSerializer()
    document = {"domain": {"name": "d", "version": "1"}}
    assert serializer.extract_visual_layout(document) is None
    with_canvas = serializer.add_visual_layout(document, {"nodes": [{"id": "node-0"}]})
    assert "canvas" not in document  # the input is not changed
    assert with_canvas["canvas"] == {"viewport": {"x": 0, "y": 0, "zoom": 1}, "nodes": [{"id": "node-0"}], "edges": []}
    assert serializer.extract_visual_layout(with_canvas) == with_canvas["canvas"]
    assert serializer.extract_visual_layout({"canvas": {}}) == {"viewport": None, "nodes": [], "edges": []}


# -- visual converter ---------------------------------------------------------------------------


def review_document() -> dict[str, Any]:
    return {
        "domain": {"name": "invoice_review", "version": "2.1", "main_workflow": "review"},
        "workflows": {
            "review": {"description": "Review", "steps": copy.deepcopy(REVIEW_STEPS)},
            "other": {"steps": []},
        },
    }


def test_yaml_to_canvas_lays_out_the_main_workflow() -> None:
    canvas = yaml_to_canvas(review_document())
    assert canvas["viewport"] == {"x": 0, "y": 0, "zoom": 1}
    assert [(n["id"], n["type"], n["position"]) for n in canvas["nodes"]] == [
        ("node-0", "extract", {"x": 250, "y": 0}),
        ("node-1", "llm", {"x": 250, "y": 120}),
        ("node-2", "transform", {"x": 250, "y": 240}),
    ]
    judge = canvas["nodes"][1]
    assert judge["data"] == {
        "label": "judge",
        "config": {"model": "small"},
        "icon": "🤖",
        "color": "#48BB78",
        "description": None,
        "inputs": ["invoice"],
        "outputs": [],
        "concept": "Verdict",
    }
    assert judge["style"]["width"] == 180
    assert judge["style"]["height"] == 60
    assert judge["style"]["background"] == "#48BB78"
    assert canvas["edges"] == [
        {"id": "edge-0-1", "source": "node-0", "target": "node-1", "type": "smoothstep", "animated": False},
        {
            "id": "edge-1-2",
            "source": "node-1",
            "target": "node-2",
            "type": "smoothstep",
            "animated": False,
            "label": "approved",
            "labelStyle": {"fill": "#9F7AEA", "fontWeight": 700},
        },
    ]


def test_unknown_types_and_missing_names_use_the_default_style() -> None:
    canvas = yaml_to_canvas({"workflows": {"main": {"steps": [{"type": "custom"}, {"description": "Just text"}]}}})
    first, second = canvas["nodes"]
    assert (first["type"], first["data"]["label"], first["data"]["icon"]) == ("custom", "Node", "⚙")
    assert (second["type"], second["data"]["label"]) == ("default", "Just text")
    assert yaml_to_canvas({}) == {"nodes": [], "edges": [], "viewport": {"x": 0, "y": 0, "zoom": 1}}


def test_a_saved_canvas_is_returned_as_it_is() -> None:
    saved = {"nodes": [{"id": "n", "position": {"x": 7, "y": 9}}], "edges": [], "viewport": {"x": 5, "y": 5, "zoom": 2}}
    document = {**review_document(), "canvas": saved}
    assert yaml_to_canvas(document) == saved
    assert yaml_to_canvas({"canvas": {}}) == {"nodes": [], "edges": [], "viewport": {"x": 0, "y": 0, "zoom": 1}}


def test_generate_auto_layout_positions() -> None:
    converter = VisualConverter()
    steps = [{"type": "llm", "name": "a"}, {"type": "llm", "name": "b", "when": "ok"}]
    horizontal = converter.generate_auto_layout(steps, layout_type="horizontal")
    assert [n["position"] for n in horizontal["nodes"]] == [{"x": 0, "y": 100}, {"x": 250, "y": 100}]
    assert horizontal["edges"][0]["label"] == "ok"  # conditions survive every layout
    vertical = converter.generate_auto_layout(steps, layout_type="tree")  # unknown: vertical
    assert [n["position"] for n in vertical["nodes"]] == [{"x": 250, "y": 0}, {"x": 250, "y": 120}]
    converter.y_spacing, converter.x_offset = 50, 10
    assert converter.generate_auto_layout(steps)["nodes"][1]["position"] == {"x": 10, "y": 50}


def test_canvas_to_yaml_builds_a_document() -> None:
    canvas = yaml_to_canvas(review_document())
    canvas["nodes"].reverse()  # the order on the canvas, not in the list, counts
    document = canvas_to_yaml(canvas)
    assert list(document) == ["domain", "workflows", "canvas"]
    assert document["domain"] == {"name": "workflow", "version": "1.0"}
    assert document["canvas"]["nodes"] == canvas["nodes"]
    assert document["workflows"]["main"]["steps"] == REVIEW_STEPS


def test_canvas_to_yaml_keeps_an_existing_document_unchanged() -> None:
    existing = review_document()
    before = copy.deepcopy(existing)
    canvas = VisualConverter().generate_auto_layout([{"type": "llm", "name": "only"}])
    document = canvas_to_yaml(canvas, existing)
    assert existing == before
    assert document["domain"] == before["domain"]
    assert document["workflows"]["other"] == {"steps": []}
    assert document["workflows"]["review"] == {"description": "Review", "steps": [{"type": "llm", "name": "only"}]}


def test_document_canvas_document_round_trip() -> None:
    document = review_document()
    back = canvas_to_yaml(yaml_to_canvas(document), document)
    assert back["workflows"]["review"]["steps"] == REVIEW_STEPS
    assert yaml_to_canvas(back) == back["canvas"]  # the saved canvas is used from now on
    assert yaml.safe_load(yaml.safe_dump(back)) == back  # plain YAML data throughout


def test_horizontal_canvases_read_left_to_right() -> None:
    converter = VisualConverter()
    canvas = converter.generate_auto_layout(REVIEW_STEPS, layout_type="horizontal")
    canvas["nodes"][0]["position"]["y"] = 140  # nudged by hand, still a row
    assert converter.detect_layout_type(canvas) == "horizontal"
    assert converter.reactflow_to_yaml(canvas)["workflows"]["main"]["steps"] == REVIEW_STEPS


@pytest.mark.parametrize(
    ("positions", "layout"),
    [
        ([], "vertical"),
        ([(500, 500)], "vertical"),
        ([(250, 0), (300, 400)], "vertical"),
        ([(0, 100), (400, 150)], "horizontal"),
        ([(0, 0), (400, 400)], "complex"),
    ],
)
def test_detect_layout_type(positions: list[tuple[int, int]], layout: str) -> None:
    nodes = [{"id": f"n{i}", "position": {"x": x, "y": y}} for i, (x, y) in enumerate(positions)]
    assert VisualConverter().detect_layout_type({"nodes": nodes}) == layout
