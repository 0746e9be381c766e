"""How the CLI shows a run: ``JsonOutput`` (one JSON object per line) or ``HumanOutput`` (rich).

``HumanOutput`` needs the ``rich`` package (``pip install 'graphwire-client[cli]'``). On a
terminal it draws a live progress bar per node with the streamed tokens below; on a pipe
it prints plain lines, and tokens as they come.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any, Protocol

from graphwire_client._generated.events import RunEvent
from graphwire_client._generated.messages import (
    InputRequest,
    NodeEvent,
    NodeStatus,
    NodeUpdate,
    PendingInput,
    Progress,
    Token,
)

__all__ = ["HumanOutput", "JsonOutput", "Output"]


class Output(Protocol):
    def start(self, workflow: str | None, workflow_id: str) -> None: ...
    def event(self, event: RunEvent) -> None: ...
    def prompt(self, request: PendingInput) -> None: ...
    def resume_after_prompt(self, typed: bool) -> None: ...
    def note(self, text: str) -> None: ...
    def outcome(self, status: str, detail: Any) -> None: ...
    def stop(self) -> None: ...


class JsonOutput:
    """``--json``: every run event as the wire frame, one per line; notes go to stderr."""

    def __init__(self, out: IO[str] = sys.stdout, err: IO[str] = sys.stderr) -> None:
        self.out = out
        self.err = err

    def start(self, workflow: str | None, workflow_id: str) -> None:
        pass

    def event(self, event: RunEvent) -> None:
        self.out.write(event.model_dump_json(exclude_none=True) + "\n")
        self.out.flush()

    def prompt(self, request: PendingInput) -> None:
        pass  # the input_request line already told; the answer is the next stdin line

    def resume_after_prompt(self, typed: bool) -> None:
        pass

    def note(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()

    def outcome(self, status: str, detail: Any) -> None:
        pass  # the terminal event's line carries it

    def stop(self) -> None:
        pass


class HumanOutput:
    """A live progress bar per node, streamed tokens, prompts and the result, with ``rich``."""

    def __init__(self) -> None:
        from rich.console import Console, Group
        from rich.live import Live
        from rich.markup import escape
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
        from rich.text import Text

        self.console = Console(highlight=False)
        self.live_mode = self.console.is_terminal
        self.progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description}", justify="left"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
        )
        self.escape = escape
        self.tasks: dict[str, Any] = {}
        self.tokens = Text()
        self.streaming = False
        self._live_type = Live
        self._group = Group(self.progress, self.tokens)
        self.live = self._new_live()

    def _new_live(self) -> Any:
        return self._live_type(self._group, console=self.console, refresh_per_second=12)

    def start(self, workflow: str | None, workflow_id: str) -> None:
        self.console.print(f"[bold]{self.escape(workflow or 'run')}[/] {self.escape(workflow_id)}")
        if self.live_mode:
            self.live.start()

    def _task(self, node_id: str) -> Any:
        task = self.tasks.get(node_id)
        if task is None:
            task = self.tasks[node_id] = self.progress.add_task(self.escape(node_id), total=None, status="running")
        return task

    def event(self, event: RunEvent) -> None:
        if isinstance(event, NodeUpdate):
            self._node_update(event)
        elif isinstance(event, Progress):
            task = self._task(event.node_id)
            self.progress.update(task, total=event.data.total or None, completed=event.data.current)
        elif isinstance(event, Token):
            self.tokens.append(event.data)
            if not self.live_mode:
                self.console.file.write(event.data)
                self.console.file.flush()
                self.streaming = True
        elif isinstance(event, NodeEvent):
            self._line(f"[dim]· {self.escape(f'{event.node_id} {event.event} {json.dumps(event.data)}')}[/]")
        elif isinstance(event, InputRequest):
            pass  # prompt() follows

    def _node_update(self, event: NodeUpdate) -> None:
        task = self._task(event.node_id)
        status = event.data.status
        node = self.escape(event.node_id)
        message = self.escape(event.data.message or "")
        if status is NodeStatus.completed:
            total = self.progress.tasks[task].total or 1
            self.progress.update(task, total=total, completed=total, status="[green]done[/]")
            if not self.live_mode:
                self._line(f"[green]✓[/] {node}")
        elif status is NodeStatus.failed:
            self.progress.update(task, status=f"[red]failed[/] {message}")
            self.progress.stop_task(task)
            self._line(f"[red]✗[/] {node} failed {message}")
        else:
            self.progress.update(task, status=status.value)
            if not self.live_mode and status is NodeStatus.running:
                self._line(f"[cyan]▸[/] {node}")

    def _line(self, markup: str) -> None:
        if self.streaming:  # finish the token line first
            self.console.file.write("\n")
            self.streaming = False
        self.console.print(markup)

    def prompt(self, request: PendingInput) -> None:
        if self.live_mode:
            # Erase the live display while asking: a spinner frozen above the question
            # would be stale; it comes back below the answer.
            self.live.transient = True
            self.live.stop()
        options = f" [{'/'.join(request.options)}]" if request.options else ""
        self._line(f"[bold yellow]?[/] {self.escape(request.prompt + options)}")
        self.console.file.write("> ")
        self.console.file.flush()

    def resume_after_prompt(self, typed: bool) -> None:
        """After a prompt: ``typed`` when a line was read from stdin (not answered elsewhere, not EOF)."""
        if not (typed and sys.stdin.isatty()):  # no Enter at a terminal ended the prompt line
            self.console.file.write("\n")
            self.console.file.flush()
        if self.live_mode:
            # A new Live: the stopped one remembers its height and would erase that many
            # lines upwards on its first refresh, the question and the typed answer.
            self.live = self._new_live()
            self.live.start()

    def note(self, text: str) -> None:
        self._line(f"[dim]{self.escape(text)}[/]")

    def outcome(self, status: str, detail: Any) -> None:
        self.stop()
        if status == "completed":
            self.console.print("[bold green]completed[/]")
            self.console.print_json(json.dumps(detail))
        elif status == "failed":
            self.console.print(f"[bold red]failed[/] {self.escape(str(detail))}")
        else:
            self.console.print(f"[bold yellow]{status}[/] {self.escape(str(detail))}")

    def stop(self) -> None:
        if self.live_mode:
            self.live.stop()
        if self.streaming:
            self.console.file.write("\n")
            self.streaming = False
