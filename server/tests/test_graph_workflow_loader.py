"""Tests for `graphwire.graph.workflow_loader`: workflows read from and written to YAML/JSON files."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

# isort: split
import graphwire.graph
from graphwire.graph import BaseNode, Graph, Node
from graphwire.graph import workflow_loader as wl
from graphwire.graph.workflow_loader import (
    discover_node_class,
    export_workflow,
    graph_to_yaml,
    load_workflow,
    load_yaml_file,
    parse_graph_syntax,
    validate_workflow,
    yaml_to_graph,
)

HERE = [__name__]  # where this module's node classes are found

# -- nodes (names unique to this module, so discovery by name is unambiguous) ------------


class LoaderGreet(Node[Any, Any]):
    def prep(self, shared: dict[str, Any]) -> str:
        return str(shared.get("name", "World"))

    def exec(self, prep_res: str) -> str:
        return f"Hello, {prep_res}!"

    def post(self, shared: dict[str, Any], prep_res: str, exec_res: str) -> None:
        shared["greeting"] = exec_res


class LoaderShout(Node[Any, Any]):
    def prep(self, shared: dict[str, Any]) -> str:
        return str(shared["greeting"])

    def exec(self, prep_res: str) -> str:
        return prep_res.upper()

    def post(self, shared: dict[str, Any], prep_res: str, exec_res: str) -> str:
        shared["shout"] = exec_res
        return "shouted"


class LoaderCheck(Node[Any, Any]):
    """Routes on ``shared["amount"]``: ``"approve"`` up to 100, else ``"reject"``."""

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str:
        shared.setdefault("trail", []).append(self.node_id)
        return "approve" if shared["amount"] <= 100 else "reject"


class LoaderMark(Node[Any, Any]):
    """Appends its node id to ``shared["trail"]``."""

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> None:
        shared.setdefault("trail", []).append(self.node_id)


class LoaderCount(Node[Any, Any]):
    """Counts up; ``"again"`` until ``shared["n"]`` reaches 3."""

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str | None:
        shared["n"] = shared.get("n", 0) + 1
        return "again" if shared["n"] < 3 else None


class LoaderNotANode:
    """Same kind of name, but not a node: discovery must skip it."""


GREET_YAML = """\
workflows:
  main:
    description: "Greet"
    concepts:
      greeter: LoaderGreet
      shout: LoaderShout
    graph: greeter >> shout
"""

BRANCH_YAML = """\
workflows:
  review:
    concepts:
      check: LoaderCheck
      approve: LoaderMark
      reject: LoaderMark
      done: LoaderMark
    graph: |
      check - "approve" >> approve >> done
      check - "reject" >> reject >> done
"""


def write(tmp_path: Path, text: str, name: str = "flow.kg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def workflow(concepts: dict[str, str], graph: str, name: str = "main") -> dict[str, Any]:
    return {"workflows": {name: {"concepts": concepts, "graph": graph}}}


# -- loading and running -------------------------------------------------------------------


def test_load_workflow_builds_a_runnable_graph(tmp_path: Path) -> None:
    graph = load_workflow(write(tmp_path, GREET_YAML))
    assert isinstance(graph, Graph)
    assert graph.start_node is not None
    assert graph.start_node.node_id == "greeter"  # concept names become node ids
    assert type(graph.start_node) is LoaderGreet
    shared: dict[str, Any] = {"name": "Alice"}
    assert graph.run(shared) == "shouted"  # a graph's result is its last action
    assert shared == {"name": "Alice", "greeting": "Hello, Alice!", "shout": "HELLO, ALICE!"}


def test_load_workflow_reads_json_and_str_paths(tmp_path: Path) -> None:
    path = tmp_path / "flow.json"
    path.write_text(json.dumps(workflow({"a": "LoaderGreet", "b": "LoaderShout"}, "a >> b")))
    shared: dict[str, Any] = {}
    load_workflow(str(path)).run(shared)
    assert shared["shout"] == "HELLO, WORLD!"


def test_single_node_graph_loads_and_runs() -> None:
    graph = yaml_to_graph(workflow({"greeter": "LoaderGreet"}, "greeter"))
    shared: dict[str, Any] = {"name": "Bo"}
    graph.run(shared)
    assert shared == {"name": "Bo", "greeting": "Hello, Bo!"}


def test_every_concept_is_built_even_when_unused() -> None:
    with pytest.raises(ValueError, match="Node class 'LoaderMissing' not found"):
        yaml_to_graph(workflow({"a": "LoaderGreet", "unused": "LoaderMissing"}, "a"))


@pytest.mark.parametrize(("amount", "trail"), [(50, ["check", "approve", "done"]), (500, ["check", "reject", "done"])])
def test_named_actions_branch(tmp_path: Path, amount: int, trail: list[str]) -> None:
    graph = load_workflow(write(tmp_path, BRANCH_YAML), search_modules=HERE)
    check = graph.start_node
    assert check is not None
    assert sorted(check.successors) == ["approve", "reject"]
    assert check.successors["approve"].successors["default"] is check.successors["reject"].successors["default"]
    shared: dict[str, Any] = {"amount": amount}
    graph.run(shared)
    assert shared["trail"] == trail


def test_loops_run_until_the_action_ends_them() -> None:
    graph = yaml_to_graph(workflow({"count": "LoaderCount", "end": "LoaderMark"}, 'count - "again" >> count >> end'))
    shared: dict[str, Any] = {}
    graph.run(shared)
    assert shared == {"n": 3, "trail": ["end"]}


def test_repeating_a_transition_does_not_warn() -> None:
    # filterwarnings=error: the core's "overwriting a successor" warning would fail this
    graph = yaml_to_graph(workflow({"a": "LoaderMark", "b": "LoaderMark"}, "a >> b\na >> b"))
    assert graph.start_node is not None
    assert list(graph.start_node.successors) == ["default"]


def test_conflicting_transitions_warn_like_the_core() -> None:
    with pytest.warns(UserWarning, match="successor"):
        yaml_to_graph(workflow({"a": "LoaderMark", "b": "LoaderMark", "c": "LoaderMark"}, "a >> b\na >> c"))


def test_main_workflow_is_chosen_by_the_domain() -> None:
    content = {
        "domain": {"main_workflow": "second"},
        "workflows": {
            "first": {"concepts": {"a": "LoaderMark"}, "graph": "a"},
            "second": {"concepts": {"b": "LoaderMark"}, "graph": "b"},
        },
    }
    graph = yaml_to_graph(content)
    assert graph.start_node is not None
    assert graph.start_node.node_id == "b"
    del content["domain"]
    first = yaml_to_graph(content).start_node
    assert first is not None
    assert first.node_id == "a"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({}, "YAML must contain 'workflows' section"),
        ({"workflows": {}}, "No workflows defined"),
        (
            {"workflows": {"main": {"concepts": {"a": "LoaderMark"}, "graph": "a"}}, "domain": {"main_workflow": "x"}},
            "Main workflow 'x' not found",
        ),
        ({"workflows": {"main": {"graph": "a"}}}, "Workflow 'main' must define 'concepts'"),
        ({"workflows": {"main": {"concepts": {"a": "LoaderMark"}}}}, "Workflow 'main' must define 'graph'"),
        (
            {"workflows": {"main": {"concepts": {"a": "LoaderMark"}, "graph": "a >> b"}}},
            "Node 'b' not defined in concepts",
        ),
        ({"workflows": {"main": {"concepts": {"a": {"class": "LoaderMark"}}, "graph": "a"}}}, "Concept 'a' must name"),
        ({"workflows": {"main": "a >> b"}}, "Workflow 'main' must be a mapping"),
    ],
)
def test_yaml_to_graph_errors(content: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        yaml_to_graph(content)


# -- files ------------------------------------------------------------------------------------


def test_load_yaml_file_reads_mappings(tmp_path: Path) -> None:
    assert load_yaml_file(write(tmp_path, "a: 1\n")) == {"a": 1}
    assert load_yaml_file(write(tmp_path, '{"a": [1]}', "x.json")) == {"a": [1]}
    assert load_yaml_file(write(tmp_path, "a: 2\n", "x.txt")) == {"a": 2}  # not .json: YAML


def test_load_yaml_file_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.kg.yaml"
    with pytest.raises(FileNotFoundError, match=r"Workflow file not found: .*nope\.kg\.yaml"):
        load_yaml_file(missing)
    with pytest.raises(ValueError, match="Invalid YAML in"):
        load_yaml_file(write(tmp_path, "a: [1\n"))
    with pytest.raises(ValueError, match="YAML content must be a dictionary"):
        load_yaml_file(write(tmp_path, "- a\n- b\n"))
    with pytest.raises(ValueError, match="YAML content must be a dictionary"):
        load_yaml_file(write(tmp_path, ""))
    with pytest.raises(json.JSONDecodeError):
        load_yaml_file(write(tmp_path, "{nope", "bad.json"))
    with pytest.raises(ValueError, match="JSON content must be a dictionary"):
        load_yaml_file(write(tmp_path, "[1]", "list.json"))


# -- validation ---------------------------------------------------------------------------------


def test_validate_workflow_accepts_valid_files(tmp_path: Path) -> None:
    assert validate_workflow(write(tmp_path, GREET_YAML)) == []
    assert validate_workflow(write(tmp_path, BRANCH_YAML)) == []
    # classes are not looked up: the names need not exist yet
    assert validate_workflow(write(tmp_path, "workflows:\n  main:\n    concepts: {a: Later}\n    graph: a\n")) == []


@pytest.mark.parametrize(
    ("text", "errors"),
    [
        ("a: [1\n", ["Failed to load YAML: Invalid YAML in"]),
        ("other: 1\n", ["Missing 'workflows' section"]),
        ("workflows: {}\n", ["No workflows defined"]),
        ("workflows: [a]\n", ["'workflows' must map names to workflows"]),
        ("workflows:\n  main: {graph: a}\n", ["Workflow 'main': Missing 'concepts' section"]),
        ("workflows:\n  main: {concepts: {}, graph: a}\n", ["Workflow 'main': No concepts defined"]),
        ("workflows:\n  main: {concepts: {a: A}}\n", ["Workflow 'main': Missing 'graph' section"]),
        ("workflows:\n  main: {concepts: {a: A}, graph: ''}\n", ["Workflow 'main': Empty graph definition"]),
        (
            "workflows:\n  main: {concepts: {a: A}, graph: a >> ghost}\n",
            ["Workflow 'main': Node 'ghost' not defined in concepts"],
        ),
        ("workflows:\n  main: {concepts: {a: A}, graph: 'a - \"x\"'}\n", ["Workflow 'main': Action 'x' of node 'a'"]),
        ("workflows:\n  main: 3\n", ["Workflow 'main': must be a mapping"]),
        (
            "domain: {main_workflow: b}\nworkflows:\n  a: {concepts: {x: X}, graph: x}\n",
            ["Main workflow 'b' not found"],
        ),
        (
            "workflows:\n  one: {graph: a}\n  two: {concepts: {a: A}, graph: a >> b}\n",
            ["Workflow 'one': Missing 'concepts' section", "Workflow 'two': Node 'b' not defined in concepts"],
        ),
    ],
)
def test_validate_workflow_reports_each_mistake(tmp_path: Path, text: str, errors: list[str]) -> None:
    found = validate_workflow(write(tmp_path, text))
    assert len(found) == len(errors), found
    for message, expected in zip(found, errors, strict=True):
        assert message.startswith(expected), found


def test_validate_workflow_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.kg.yaml"
    assert validate_workflow(missing) == [f"File not found: {missing}"]


# -- graph syntax -------------------------------------------------------------------------------


def test_parse_graph_syntax_chains_and_actions() -> None:
    concepts = {"a": "A", "b": "B", "c": "C", "my-node": "D"}
    assert parse_graph_syntax("a >> b >> c", concepts) == [("a", "b", None), ("b", "c", None)]
    assert parse_graph_syntax("a", concepts) == []
    assert parse_graph_syntax("a - \"yes\" >> b\n\n a - 'no' >> my-node >> c\n", concepts) == [
        ("a", "b", "yes"),
        ("a", "my-node", "no"),
        ("my-node", "c", None),
    ]
    assert parse_graph_syntax('a-"x">>b', concepts) == [("a", "b", "x")]


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        ("a >> ghost", "Node 'ghost' not defined in concepts"),
        ("a >> >> b", "Node '' not defined in concepts"),
        ('a >> b - "x"', "Action 'x' of node 'b' leads nowhere"),
        ('a - "" >> b', "Empty action after node 'a'"),
        ("a >> b b", "Node 'b b' not defined in concepts"),
    ],
)
def test_parse_graph_syntax_errors(graph: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_graph_syntax(graph, {"a": "A", "b": "B"})


# -- class discovery ------------------------------------------------------------------------------


@pytest.fixture
def modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path for test modules; the modules imported from it are forgotten after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def make_module(folder: Path, dotted: str, body: str) -> None:
    path = folder.joinpath(*dotted.split(".")).with_suffix(".py")
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(folder).parents:
        if parent != Path("."):
            (folder / parent / "__init__.py").touch()
    path.write_text(body, encoding="utf-8")
    importlib.invalidate_caches()


TWIN = "from graphwire.graph import Node\nclass LoaderTwin(Node):\n    origin = {origin!r}\n"


def test_discovery_finds_classes_of_imported_modules() -> None:
    assert discover_node_class("LoaderGreet") is LoaderGreet
    assert discover_node_class("LoaderGreet", search_modules=HERE) is LoaderGreet


def test_discovery_skips_non_node_classes_and_reports_missing() -> None:
    with pytest.raises(ValueError, match="Node class 'LoaderNotANode' not found") as info:
        discover_node_class("LoaderNotANode")
    assert "search_modules" in str(info.value)


def test_search_modules_win_over_an_unrelated_class_of_the_same_name(modules: Path) -> None:
    make_module(modules, "loader_elsewhere", TWIN.format(origin="elsewhere"))
    make_module(modules, "loader_mine", TWIN.format(origin="mine"))
    importlib.import_module("loader_elsewhere")  # already imported, so KayGraph would pick it
    cls: Any = discover_node_class("LoaderTwin", search_modules=["loader_mine"])
    assert cls.origin == "mine"
    assert issubclass(cls, BaseNode)


def test_two_imported_classes_of_one_name_are_ambiguous(modules: Path) -> None:
    make_module(modules, "loader_one", TWIN.format(origin="one"))
    make_module(modules, "loader_two", TWIN.format(origin="two"))
    importlib.import_module("loader_one")
    importlib.import_module("loader_two")
    with pytest.raises(ValueError, match=r"'LoaderTwin' is ambiguous: loader_one.LoaderTwin, loader_two.LoaderTwin"):
        discover_node_class("LoaderTwin")
    cls: Any = discover_node_class("LoaderTwin", search_modules=["loader_two"])
    assert cls.origin == "two"


def test_dotted_search_modules_are_imported(modules: Path) -> None:
    make_module(modules, "loaderpkg.flows.nodes", TWIN.format(origin="dotted"))
    cls: Any = discover_node_class("LoaderTwin", search_modules=["no_such_module_xyz", "loaderpkg.flows.nodes"])
    assert cls.origin == "dotted"  # on the first call, before anything imported it


def test_a_broken_search_module_raises_its_own_error(modules: Path) -> None:
    make_module(modules, "loader_broken", "import loader_dependency_that_is_missing\n")
    with pytest.raises(ModuleNotFoundError, match="loader_dependency_that_is_missing"):
        discover_node_class("LoaderGreet", search_modules=["loader_broken"])


def test_the_conventional_nodes_module_is_searched(modules: Path) -> None:
    if "nodes" in sys.modules:
        pytest.skip("a 'nodes' module is already imported")
    make_module(modules, "nodes", TWIN.format(origin="nodes.py"))
    cls: Any = yaml_to_graph(workflow({"t": "LoaderTwin"}, "t")).start_node
    assert type(cls).origin == "nodes.py"


# -- export ------------------------------------------------------------------------------------------


def linear() -> Graph:
    greeter, shout = LoaderGreet(node_id="greeter"), LoaderShout(node_id="shout")
    greeter >> shout
    return Graph(start=greeter)


def test_graph_to_yaml_writes_the_file_format() -> None:
    document = yaml.safe_load(graph_to_yaml(linear(), workflow_name="greet"))
    assert document == {
        "workflows": {
            "greet": {
                "description": "Exported workflow: greet",
                "concepts": {"greeter": "LoaderGreet", "shout": "LoaderShout"},
                "graph": "greeter >> shout",
            }
        }
    }
    assert "graph: greeter >> shout" in graph_to_yaml(linear().start_node)  # type: ignore[arg-type]


def test_export_and_reload_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "out" / "greet.kg.yaml"
    export_workflow(linear(), path)
    assert capsys.readouterr().out == f"✓ Workflow exported to: {path}\n"
    assert validate_workflow(path) == []
    shared: dict[str, Any] = {"name": "Ann"}
    load_workflow(path, search_modules=HERE).run(shared)
    assert shared == {"name": "Ann", "greeting": "Hello, Ann!", "shout": "HELLO, ANN!"}


def shape(graph: Graph) -> dict[str, tuple[str, dict[str, str]]]:
    """node id → (class name, {action: successor id}) for every node reachable from the start."""
    assert graph.start_node is not None
    found: dict[str, tuple[str, dict[str, str]]] = {}
    todo = [graph.start_node]
    while todo:
        node = todo.pop()
        if node.node_id not in found:
            found[node.node_id] = (type(node).__name__, {a: s.node_id for a, s in node.successors.items()})
            todo += node.successors.values()
    return found


def test_branching_graph_round_trips() -> None:
    graph = yaml_to_graph(yaml.safe_load(BRANCH_YAML), search_modules=HERE)
    text = graph_to_yaml(graph)
    assert "graph: |-\n" in text  # a block, one chain a line
    document = yaml.safe_load(text)
    assert document["workflows"]["main"]["graph"].splitlines() == [
        'check - "approve" >> approve >> done',
        'check - "reject" >> reject >> done',
    ]
    reloaded = yaml_to_graph(document, search_modules=HERE)
    assert shape(reloaded) == shape(graph)
    shared: dict[str, Any] = {"amount": 1000}
    reloaded.run(shared)
    assert shared["trail"] == ["check", "reject", "done"]


def test_cycles_and_single_nodes_round_trip() -> None:
    loop = yaml_to_graph(workflow({"count": "LoaderCount", "end": "LoaderMark"}, 'count - "again" >> count >> end'))
    assert yaml.safe_load(graph_to_yaml(loop))["workflows"]["main"]["graph"] == 'count - "again" >> count >> end'
    assert shape(yaml_to_graph(yaml.safe_load(graph_to_yaml(loop)))) == shape(loop)
    alone = Graph(start=LoaderGreet(node_id="solo"))
    document = yaml.safe_load(graph_to_yaml(alone))
    assert document["workflows"]["main"]["graph"] == "solo"
    assert shape(yaml_to_graph(document)) == {"solo": ("LoaderGreet", {})}


def test_export_errors() -> None:
    with pytest.raises(ValueError, match="Cannot export: invalid start node type <class 'NoneType'>"):
        graph_to_yaml(Graph())
    with pytest.raises(ValueError, match="Cannot export: invalid start node type <class 'str'>"):
        graph_to_yaml("a")  # type: ignore[arg-type]
    first, second = LoaderMark(node_id="same"), LoaderMark(node_id="same")
    first >> second
    with pytest.raises(ValueError, match="two nodes share the node_id 'same'"):
        graph_to_yaml(first)
    with pytest.raises(ValueError, match="node_id 'a >> b' cannot be written"):
        graph_to_yaml(LoaderMark(node_id="a >> b"))
    source = LoaderMark(node_id="s")
    source - "x >> y" >> LoaderMark(node_id="t")
    with pytest.raises(ValueError, match="action 'x >> y' cannot be written"):
        graph_to_yaml(source)


def test_exported_default_ids_reload() -> None:
    # without node_id, ids are "<Class>_<id>": still valid concept names
    start = LoaderGreet()
    start >> LoaderShout()
    shared: dict[str, Any] = {}
    yaml_to_graph(yaml.safe_load(graph_to_yaml(start)), search_modules=HERE).run(shared)
    assert shared["shout"] == "HELLO, WORLD!"


# -- public surface ----------------------------------------------------------------------------------


def test_top_level_exports_match_kaygraph() -> None:
    for name in ("load_workflow", "export_workflow", "validate_workflow", "graph_to_yaml", "yaml_to_graph"):
        assert getattr(graphwire.graph, name) is getattr(wl, name)
        assert name in graphwire.graph.__all__
    for helper in ("load_yaml_file", "discover_node_class", "parse_graph_syntax"):
        assert helper in wl.__all__
        assert helper not in graphwire.graph.__all__
    assert "declarative" not in graphwire.graph.__all__
