"""Tests for `graphwire.graph.cli`: KayGraph's ``kaygraph validate|run|list`` as ``python -m graphwire.graph``."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# isort: split
from graphwire.graph import Node
from graphwire.graph.cli import find_workflow_files, main, parse_input, parse_value

# -- nodes (names unique to this module, so discovery by name is unambiguous) ------------


class CliGreet(Node[Any, Any]):
    def prep(self, shared: dict[str, Any]) -> str:
        return str(shared.get("name", "World"))

    def exec(self, prep_res: str) -> str:
        return f"Hello, {prep_res}!"

    def post(self, shared: dict[str, Any], prep_res: str, exec_res: str) -> None:
        shared["greeting"] = exec_res


class CliRepeat(Node[Any, Any]):
    """Repeats the greeting ``shared["times"]`` times; its action says whether it was asked to shout."""

    def post(self, shared: dict[str, Any], prep_res: Any, exec_res: Any) -> str:
        shared["text"] = " ".join([shared["greeting"]] * shared["times"])
        shared["_scratch"] = "not shown"
        return "loud" if shared["loud"] else "quiet"


class CliNoop(Node[Any, Any]):
    pass


class CliExplode(Node[Any, Any]):
    def exec(self, prep_res: Any) -> None:
        raise RuntimeError("the node broke")


GREETING = """\
domain:
  name: greetings
  main_workflow: greet
workflows:
  greet:
    concepts:
      hello: CliGreet
      repeat: CliRepeat
    graph: hello >> repeat
"""

BROKEN = """\
domain:
  main_workflow: nowhere
workflows:
  no_concepts:
    graph: a >> b
  bad_name:
    concepts:
      a: CliGreet
    graph: a >> ghost
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def one_node(class_name: str) -> str:
    return f"workflows:\n  main:\n    concepts:\n      only: {class_name}\n    graph: only\n"


# -- validate ------------------------------------------------------------------------------------


def test_validate_a_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "greet.kg.yaml", GREETING)
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: valid\n"
    assert err == ""


def test_validate_prints_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "broken.kg.yaml", BROKEN)
    assert main(["validate", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{path}: 3 errors",
        "  1. Main workflow 'nowhere' not found",
        "  2. Workflow 'no_concepts': Missing 'concepts' section",
        "  3. Workflow 'bad_name': Node 'ghost' not defined in concepts",
    ]
    assert err == ""


def test_validate_reports_a_file_that_is_not_yaml_without_crashing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "bad.kg.yaml", "workflows: [unclosed\n")
    assert main(["validate", str(path)]) == 1
    out, _ = capsys.readouterr()
    assert out.startswith(f"{path}: 1 error\n  1. Failed to load YAML: Invalid YAML in {path}")


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_missing_file_is_an_error_on_stderr(command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.kg.yaml"
    assert main([command, str(missing)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: no such file: {missing}\n"


# -- run -----------------------------------------------------------------------------------------


def test_run_with_inputs_prints_the_last_action_and_the_shared_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "greet.kg.yaml", GREETING)
    argv = ["run", str(path), "--input", "name=Ada", "-i", "times=2", "-i", "loud=True", "-i", "day=2024-01-05"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{path}: done, last action 'loud'",
        "shared store:",
        "  name: 'Ada'",
        "  times: 2",
        "  loud: True",
        "  day: '2024-01-05'",  # KayGraph crashes on it (int('2024-01-05'))
        "  greeting: 'Hello, Ada!'",
        "  text: 'Hello, Ada! Hello, Ada!'",
    ]  # `_scratch` is internal, as in KayGraph
    assert err == ""


def test_run_without_inputs_shows_an_empty_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "noop.kg.yaml", one_node("CliNoop"))
    assert main(["run", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{path}: done, last action None", "shared store: (empty)"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("FALSE", False),
        ("42", 42),
        ("-7", -7),
        ("007", 7),
        ("1.5", 1.5),
        ("-.5", -0.5),
        ("3.", 3.0),
        ("Alice", "Alice"),
        ("", ""),
        ("2024-01-05", "2024-01-05"),
        ("1.2.3", "1.2.3"),
        ("5-", "5-"),
        ("1e3", "1e3"),
        ("+5", "+5"),
        ("-", "-"),
        ("a=b", "a=b"),
    ],
)
def test_input_values_are_typed_like_kaygraph_without_crashing(text: str, value: object) -> None:
    parsed = parse_value(text)
    assert parsed == value
    assert type(parsed) is type(value)


def test_input_splits_at_the_first_equals_sign() -> None:
    assert parse_input("query=a=b") == ("query", "a=b")
    assert parse_input("empty=") == ("empty", "")


@pytest.mark.parametrize("item", ["name", "=Ada"])
def test_bad_input_is_refused(item: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "greet.kg.yaml", GREETING)
    assert main(["run", str(path), "--input", item]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"error: --input {item!r} is not key=value: write it as key=value, e.g. --input name=Alice\n"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("workflows: [unclosed\n", "Invalid YAML in"),
        (one_node("CliNoSuchClass"), "Node class 'CliNoSuchClass' not found"),
        (BROKEN, "Main workflow 'nowhere' not found"),
    ],
)
def test_run_of_a_bad_file_says_why_without_a_traceback(
    text: str, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "bad.kg.yaml", text)
    assert main(["run", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: cannot load {path}: ")
    assert reason in err
    assert "Traceback" not in err


def test_a_failing_node_shows_its_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "explode.kg.yaml", one_node("CliExplode"))
    assert main(["run", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "Traceback" in err
    assert 'raise RuntimeError("the node broke")' in err
    assert err.endswith(f"error: {path} failed: RuntimeError('the node broke')\n")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """``tmp_path`` as the current folder, on sys.path as ``python -m`` puts it; its modules are forgotten after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


NODES_PY = """\
from graphwire.graph import Node


class CliFromNodesPy(Node):
    def post(self, shared, prep_res, exec_res):
        shared["found_in"] = "nodes.py"
"""


def test_run_finds_the_node_classes_of_a_nodes_py_in_the_current_folder(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if "nodes" in sys.modules:
        pytest.skip("a 'nodes' module is already imported")
    write(workdir, "nodes.py", NODES_PY)
    write(workdir, "flow.kg.yaml", one_node("CliFromNodesPy"))
    importlib.invalidate_caches()
    assert main(["run", "flow.kg.yaml"]) == 0
    assert "  found_in: 'nodes.py'" in capsys.readouterr().out.splitlines()


# -- list ----------------------------------------------------------------------------------------


def test_list_finds_nested_workflow_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "build" / "project"  # KayGraph skips everything under a folder named build
    write(root, "greet.kg.yaml", GREETING)
    write(root, "flows/one.kg.yaml", one_node("CliNoop"))
    write(root, "flows/deeper/bad.kg.yaml", "- a list\n")
    write(root, "flows/notes.yaml", GREETING)  # not *.kg.yaml
    for skipped in ["node_modules", ".venv", "venv", ".git", "__pycache__", "dist", "build"]:
        write(root, f"flows/{skipped}/hidden.kg.yaml", GREETING)
    assert main(["list", "--path", str(root)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{root}: 3 workflow files",
        f"  {Path('flows/deeper/bad.kg.yaml')}",
        f"    cannot read it: YAML content must be a dictionary, got list in {root / 'flows/deeper/bad.kg.yaml'}",
        f"  {Path('flows/one.kg.yaml')}",
        "    workflows: main",
        "  greet.kg.yaml",
        "    workflows: greet",
        "    domain: greetings",
    ]
    assert err == ""


def test_list_searches_the_current_folder_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write(tmp_path, "a/b.kg.yaml", GREETING)
    monkeypatch.chdir(tmp_path)
    assert main(["list"]) == 0
    assert find_workflow_files(tmp_path) == [Path("a/b.kg.yaml")]
    assert capsys.readouterr().out.startswith(f"{tmp_path}: 1 workflow file\n  {Path('a/b.kg.yaml')}\n")


def test_list_with_nothing_to_find(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write(tmp_path, "node_modules/x.kg.yaml", GREETING)
    assert main(["list", "-p", str(tmp_path)]) == 1
    assert capsys.readouterr().out == f"{tmp_path}: no *.kg.yaml files\n"


def test_list_of_a_missing_folder_or_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--path", str(tmp_path / "missing")]) == 1
    assert capsys.readouterr().err == f"error: no such folder: {tmp_path / 'missing'}\n"
    path = write(tmp_path, "greet.kg.yaml", GREETING)
    assert main(["list", "--path", str(path)]) == 1
    assert capsys.readouterr().err == f"error: not a folder: {path}\n"


# -- arguments -----------------------------------------------------------------------------------


def test_no_command_prints_the_help_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 1
    assert "{validate,run,list}" in capsys.readouterr().err


def test_usage_errors_exit_2_and_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run"]) == 2
    assert "the following arguments are required: workflow" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert main(["run", "--help"]) == 0
    assert "KEY=VALUE" in capsys.readouterr().out


# -- the entry point -----------------------------------------------------------------------------


def test_python_dash_m_graphwire_graph_validate(tmp_path: Path) -> None:
    write(tmp_path, "nodes.py", NODES_PY)
    write(tmp_path, "flow.kg.yaml", one_node("CliFromNodesPy"))
    done = subprocess.run(
        [sys.executable, "-m", "graphwire.graph", "validate", "flow.kg.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "flow.kg.yaml: valid\n", "")
