"""KayGraph's ``kaygraph`` command line, run here as ``python -m graphwire.graph``.

::

    python -m graphwire.graph validate <workflow.kg.yaml>
    python -m graphwire.graph run <workflow.kg.yaml> [--input key=value]...
    python -m graphwire.graph list [--path <directory>]

The commands, arguments and exit codes are KayGraph's: 0 when the command did its job,
1 when the file is missing or invalid, the workflow fails, or `list` finds nothing, 2 for
bad arguments. The messages are graphwire's own, in plain ASCII: a report goes to stdout
(validation errors included), a reason the command could not do its job to stderr.
Where it behaves differently from KayGraph's is listed in ``docs/kaygraph.md``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .workflow_loader import load_workflow, load_yaml_file, validate_workflow

__all__ = ["find_workflow_files", "main", "parse_input", "parse_value"]

WORKFLOW_SUFFIX = ".kg.yaml"

# Folders `list` does not descend into (KayGraph's, plus `.venv`), below the search folder.
SKIPPED_FOLDERS = frozenset({"node_modules", ".git", "venv", ".venv", "__pycache__", ".pytest_cache", "dist", "build"})

_INTEGER = re.compile(r"-?\d+")
_DECIMAL = re.compile(r"-?(?:\d+\.\d*|\.\d+)")

Scalar = str | int | float | bool


# -- run's --input values ----------------------------------------------------------------


def parse_value(text: str) -> Scalar:
    """An ``--input`` value as KayGraph types it: a bool, an int, a float, else the text.

    ``true`` / ``false`` in any case are bools, ``42`` and ``-7`` ints, ``1.5``, ``-.5``
    and ``3.`` floats; anything else (``2024-01-05``, ``1.2.3``, ``1e3``) stays a string.
    """
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INTEGER.fullmatch(text):
        return int(text)
    if _DECIMAL.fullmatch(text):
        return float(text)
    return text


def parse_input(item: str) -> tuple[str, Scalar]:
    """The ``(key, value)`` of one ``--input key=value``; `ValueError` without a key."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--input {item!r} is not key=value")
    return key, parse_value(value)


# -- list ------------------------------------------------------------------------------


def find_workflow_files(root: Path) -> list[Path]:
    """Every ``*.kg.yaml`` file under ``root``, relative to it, sorted.

    Folders named in `SKIPPED_FOLDERS` are skipped below ``root`` (``root`` itself is
    searched whatever its name); symlinked folders are not followed.
    """
    found: list[Path] = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [name for name in subfolders if name not in SKIPPED_FOLDERS]
        here = Path(folder).relative_to(root)
        found += (here / name for name in files if name.endswith(WORKFLOW_SUFFIX))
    return sorted(found)


def _summary(path: Path) -> list[str]:
    """What `list` says about one file: its workflows and domain, or why it cannot read it."""
    try:
        content = load_yaml_file(path)
    except (OSError, ValueError) as exc:
        return [f"cannot read it: {exc}"]
    lines = []
    workflows = content.get("workflows")
    if isinstance(workflows, Mapping) and workflows:
        lines.append("workflows: " + ", ".join(str(name) for name in workflows))
    domain = content.get("domain")
    if isinstance(domain, Mapping):
        lines.append(f"domain: {domain.get('name', 'unknown')}")
    return lines


# -- commands --------------------------------------------------------------------------


def _problem(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _validate(args: argparse.Namespace) -> int:
    path = Path(args.workflow)
    if not path.exists():
        return _problem(f"no such file: {path}")
    errors = validate_workflow(path)
    if not errors:
        print(f"{path}: valid")
        return 0
    print(f"{path}: {len(errors)} error{'s' if len(errors) > 1 else ''}")
    for number, error in enumerate(errors, 1):
        print(f"  {number}. {error}")
    return 1


def _run(args: argparse.Namespace) -> int:
    path = Path(args.workflow)
    if not path.exists():
        return _problem(f"no such file: {path}")
    shared: dict[str, Any] = {}
    for item in args.input or []:
        try:
            key, value = parse_input(item)
        except ValueError as exc:
            return _problem(f"{exc}: write it as key=value, e.g. --input name=Alice")
        shared[key] = value
    try:
        graph = load_workflow(path)
    except (OSError, ValueError) as exc:  # the file's mistake: the loader's traceback would not help
        return _problem(f"cannot load {path}: {exc}")
    except Exception as exc:  # raised by the code of a module that defines the node classes
        traceback.print_exc()
        return _problem(f"cannot load {path}: {exc!r}")
    try:
        result = graph.run(shared)
    except Exception as exc:
        traceback.print_exc()
        return _problem(f"{path} failed: {exc!r}")
    print(f"{path}: done, last action {result!r}")
    visible = {key: value for key, value in shared.items() if not key.startswith("_")}
    print("shared store:" if visible else "shared store: (empty)")
    for key, value in visible.items():
        print(f"  {key}: {value!r}")
    return 0


def _list(args: argparse.Namespace) -> int:
    root = Path(args.path) if args.path else Path.cwd()
    if not root.exists():
        return _problem(f"no such folder: {root}")
    if not root.is_dir():
        return _problem(f"not a folder: {root}")
    files = find_workflow_files(root)
    if not files:
        print(f"{root}: no *{WORKFLOW_SUFFIX} files")
        return 1
    print(f"{root}: {len(files)} workflow file{'s' if len(files) > 1 else ''}")
    for relative in files:
        print(f"  {relative}")
        for line in _summary(root / relative):
            print(f"    {line}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m graphwire.graph",
        description="Check, run and find workflow files (*.kg.yaml), as KayGraph's `kaygraph` command does.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{validate,run,list}")
    validate = commands.add_parser("validate", help="check a workflow file without running it")
    validate.add_argument("workflow", help="the workflow file (*.kg.yaml)")
    validate.set_defaults(handler=_validate)
    run = commands.add_parser("run", help="run a workflow file's main workflow")
    run.add_argument("workflow", help="the workflow file (*.kg.yaml)")
    run.add_argument(
        "--input",
        "-i",
        action="append",
        metavar="KEY=VALUE",
        help="put KEY in the shared store before the run (repeatable); true/false and numbers are converted",
    )
    run.set_defaults(handler=_run)
    find = commands.add_parser("list", help="find the workflow files under a folder")
    find.add_argument("--path", "-p", help="the folder to search (the current one by default)")
    find.set_defaults(handler=_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command (``argv`` defaults to ``sys.argv[1:]``); returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 1
    code: int = args.handler(args)
    return code
