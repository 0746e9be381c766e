"""The five workflow patterns of Anthropic's "Building effective agents" (``kaygraph.agent.anthropic_patterns``).

1. Prompt chaining: `create_prompt_chain`, one `ChainStepNode` per step, each fed the
   previous step's ``shared["chain_output"]``; a step's gate can stop the chain.
2. Routing: `create_router`, a `RouterNode` that classifies ``shared["user_input"]`` and
   follows the matching category's handler.
3. Parallelization: `run_parallel_sectioning` (different prompts at once) and
   `run_parallel_voting` (one prompt sampled several times, the most common reply wins).
4. Orchestrator-workers: `create_orchestrator_workers`, an `OrchestratorNode` that asks
   the LLM for a plan and runs a worker node per subtask.
5. Evaluator-optimizer: `create_evaluator_optimizer`, a `GeneratorNode` and an
   `EvaluatorNode` in a loop until the evaluator is satisfied or the rounds run out.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

from .._context import InputTimeout
from .._graph import AsyncGraph, Graph
from .._node import Action, AsyncNode, BaseNode, Shared
from ..interactive import AsyncInteractiveGraph
from .nodes import LLMFunc, Message, llm_text, parse_json_reply

__all__ = [
    "ChainStepNode",
    "EvaluatorNode",
    "GeneratorNode",
    "OrchestratorNode",
    "RouterNode",
    "create_evaluator_optimizer",
    "create_orchestrator_workers",
    "create_prompt_chain",
    "create_router",
    "run_parallel_sectioning",
    "run_parallel_voting",
]


def _ask(system: str, user: str) -> list[Message]:
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


class _EndsQuietly(Graph):
    """A graph where the actions in ``ends`` stop it on purpose, without the "graph ends" warning."""

    ends: frozenset[str] = frozenset()

    def get_next_node(self, current: BaseNode[Any, Any], action: Action) -> BaseNode[Any, Any] | None:
        if action in self.ends and action not in current.successors:
            return None
        return super().get_next_node(current, action)


class _PatternGraph(_EndsQuietly, AsyncGraph):
    pass


class _PatternLoop(_EndsQuietly, AsyncInteractiveGraph):
    pass


# -- 1. prompt chaining -----------------------------------------------------------------


class ChainStepNode(AsyncNode[dict[str, str], Any]):
    """One LLM call of a chain: ``system_prompt`` applied to ``shared["chain_output"]``.

    Its reply becomes the new ``chain_output`` and is appended to ``chain_history`` as
    ``{"step", "output"}``. When ``gate_func(output)`` is false the chain stops with
    action ``"error"``, ``shared["error"]`` and ``shared["_exit"]``.
    """

    def __init__(
        self,
        step_name: str,
        llm_func: LLMFunc,
        system_prompt: str,
        gate_func: Callable[[Any], bool] | None = None,
    ) -> None:
        super().__init__(node_id=step_name)
        self.llm_func = llm_func
        self.system_prompt = system_prompt
        self.gate_func = gate_func

    async def prep_async(self, shared: Shared) -> dict[str, str]:
        return {"input": shared.get("chain_output", ""), "system": self.system_prompt}

    async def exec_async(self, prep_res: dict[str, str]) -> Any:
        return await self.llm_func(_ask(prep_res["system"], prep_res["input"]))

    async def post_async(self, shared: Shared, prep_res: dict[str, str], exec_res: Any) -> Action:
        shared["chain_output"] = output = llm_text(exec_res)
        shared.setdefault("chain_history", []).append({"step": self.node_id, "output": output})
        if self.gate_func is not None and not self.gate_func(output):
            self.logger.warning("node %s: the gate refused the output", self.node_id)
            shared["_exit"] = True
            shared["error"] = f"Validation failed at step: {self.node_id}"
            return "error"
        return None


def create_prompt_chain(steps: list[dict[str, Any]], llm_func: LLMFunc) -> AsyncGraph:
    """A chain of `ChainStepNode` from ``[{"name", "prompt", "gate"?}, ...]``.

    Run it with ``await chain.run_async({"chain_output": first_input})``.
    """
    if not steps:
        raise ValueError("a prompt chain needs at least one step")
    nodes = [ChainStepNode(step["name"], llm_func, step["prompt"], step.get("gate")) for step in steps]
    for node, following in itertools.pairwise(nodes):
        node >> following
    graph = _PatternGraph(nodes[0])
    graph.ends = frozenset({"error"})
    return graph


# -- 2. routing ---------------------------------------------------------------------------


class RouterNode(AsyncNode[dict[str, str], Any]):
    """Asks the LLM for one of ``routes``' categories and returns that category's action.

    The reply matches a category when it contains it (case-insensitively; the longest
    such category wins); ``shared["route_category"]`` is set to it. No match is action
    ``"default"``.
    """

    def __init__(self, llm_func: LLMFunc, routes: dict[str, str]) -> None:
        super().__init__(node_id="router")
        self.llm_func = llm_func
        self.routes = routes

    async def prep_async(self, shared: Shared) -> dict[str, str]:
        categories = "\n".join(f"- {category}" for category in self.routes)
        system = f"Which one of these categories fits the user's message?\n{categories}\n\nReply with its name only."
        return {"system": system, "input": shared.get("user_input", "")}

    async def exec_async(self, prep_res: dict[str, str]) -> Any:
        return await self.llm_func(_ask(prep_res["system"], prep_res["input"]))

    async def post_async(self, shared: Shared, prep_res: dict[str, str], exec_res: Any) -> Action:
        reply = llm_text(exec_res).strip().lower()
        matches = [category for category in self.routes if category.lower() in reply]
        if not matches:
            self.logger.warning("node %s: no category in the reply %r", self.node_id, reply)
            return "default"
        shared["route_category"] = category = max(matches, key=len)
        return self.routes[category]


def create_router(llm_func: LLMFunc, routes: dict[str, BaseNode[Any, Any]]) -> AsyncGraph:
    """A `RouterNode` followed by ``routes[category]``, the handler node for each category.

    ``await router.run_async(shared)`` returns the handler's action, as every graph does;
    read the results from ``shared``.
    """
    router = RouterNode(llm_func, {category: category for category in routes})
    for category, handler in routes.items():
        router - category >> handler
    return AsyncGraph(router)


# -- 3. parallelization ------------------------------------------------------------------


async def run_parallel_sectioning(llm_func: LLMFunc, tasks: list[dict[str, str]]) -> list[Any]:
    """Run every ``{"system", "input"}`` task at once; the replies, in the tasks' order."""
    return list(await asyncio.gather(*(llm_func(_ask(task["system"], task["input"])) for task in tasks)))


async def run_parallel_voting(llm_func: LLMFunc, task: dict[str, str], num_samples: int = 3) -> dict[str, Any]:
    """Sample one task ``num_samples`` times at once.

    Returns ``{"samples", "aggregated", "count"}``: ``aggregated`` is the first sample
    whose (stripped) text is the most common one, so with no majority it is the first.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, not {num_samples}")
    samples = list(await asyncio.gather(*(llm_func(_ask(task["system"], task["input"])) for _ in range(num_samples))))
    texts = [llm_text(sample).strip() for sample in samples]
    winner = Counter(texts).most_common(1)[0][0]
    return {"samples": samples, "aggregated": samples[texts.index(winner)], "count": num_samples}


# -- 4. orchestrator-workers -----------------------------------------------------------


class OrchestratorNode(AsyncNode[dict[str, str], Any]):
    """Plans ``shared["user_input"]`` as ``[{"worker", "task"}, ...]`` and runs each subtask's worker.

    Workers run one after another, each as a graph from its node (so its successors run
    too) on the shared store, with params ``{"worker", "task"}`` and the task in
    ``shared["current_task"]``; what a worker leaves in ``shared["worker_result"]`` is
    its result. ``shared["orchestrator_plan"]`` is the plan and
    ``shared["orchestrator_results"]`` holds ``{"worker", "task", "success", "action",
    "result"}`` (or ``"error"``) per subtask. Actions: ``"complete"``, or ``"error"``
    with ``shared["error"]`` when the plan is not a JSON array of objects or a worker
    raised (the rest of the plan is then skipped). An unknown worker is a failed entry.
    """

    def __init__(self, llm_func: LLMFunc, worker_registry: dict[str, BaseNode[Any, Any]]) -> None:
        super().__init__(node_id="orchestrator")
        self.llm_func = llm_func
        self.workers = worker_registry

    async def prep_async(self, shared: Shared) -> dict[str, str]:
        workers = "\n".join(f"- {name}" for name in self.workers)
        system = (
            f"Split the user's request into subtasks, each for one of these workers:\n{workers}\n\n"
            'Reply with a JSON array only: [{"worker": "<worker>", "task": "<what it should do>"}, ...]'
        )
        return {"system": system, "input": shared.get("user_input", "")}

    async def exec_async(self, prep_res: dict[str, str]) -> Any:
        return await self.llm_func(_ask(prep_res["system"], prep_res["input"]))

    async def post_async(self, shared: Shared, prep_res: dict[str, str], exec_res: Any) -> Action:
        try:
            plan = parse_json_reply(llm_text(exec_res))
            if not isinstance(plan, list) or not all(isinstance(subtask, dict) for subtask in plan):
                raise ValueError('the plan must be a JSON array of {"worker", "task"} objects')
        except ValueError as exc:
            self.logger.warning("node %s: no usable plan: %s", self.node_id, exc)
            shared["error"] = str(exc)
            return "error"
        shared["orchestrator_plan"] = plan
        results: list[dict[str, Any]] = []
        shared["orchestrator_results"] = results
        try:
            for subtask in plan:
                name, task = subtask.get("worker"), subtask.get("task")
                try:
                    results.append(await self._run_worker(shared, name, task))
                except InputTimeout:
                    raise
                except Exception as exc:
                    self.logger.warning("node %s: worker %s failed", self.node_id, name, exc_info=True)
                    shared["error"] = f"{name}: {exc}"
                    results.append({"worker": name, "task": task, "success": False, "error": shared["error"]})
                    return "error"
        finally:
            shared.pop("current_task", None)
        return "complete"

    async def _run_worker(self, shared: Shared, name: Any, task: Any) -> dict[str, Any]:
        worker = self.workers.get(name) if isinstance(name, str) else None
        if worker is None:
            return {"worker": name, "task": task, "success": False, "error": f"Unknown worker: {name}"}
        shared["current_task"] = task
        shared.pop("worker_result", None)
        graph = AsyncGraph(worker, node_id=f"{self.node_id}.{name}")
        graph.set_params({**self.params, "worker": name, "task": task})
        action = await graph.run_async(shared)
        return {
            "worker": name,
            "task": task,
            "success": True,
            "action": action,
            "result": shared.pop("worker_result", None),
        }


def create_orchestrator_workers(llm_func: LLMFunc, workers: dict[str, BaseNode[Any, Any]]) -> AsyncGraph:
    """An `OrchestratorNode` over ``workers`` (worker type → node), as a graph."""
    return AsyncGraph(OrchestratorNode(llm_func, workers))


# -- 5. evaluator-optimizer --------------------------------------------------------------

_SCORE = re.compile(r"\bscore\b\W*(\d+)", re.IGNORECASE)


class GeneratorNode(AsyncNode[dict[str, Any], Any]):
    """Answers ``shared["user_input"]`` into ``shared["generated_response"]``.

    From the second round on it also sees its previous response and the evaluator's
    ``shared["evaluation_feedback"]``, and is asked to improve on them.
    """

    def __init__(self, llm_func: LLMFunc, system_prompt: str) -> None:
        super().__init__(node_id="generator")
        self.llm_func = llm_func
        self.system_prompt = system_prompt

    async def prep_async(self, shared: Shared) -> dict[str, Any]:
        return {
            "input": shared.get("user_input", ""),
            "previous": shared.get("generated_response"),
            "feedback": shared.get("evaluation_feedback"),
        }

    async def exec_async(self, prep_res: dict[str, Any]) -> Any:
        messages = _ask(self.system_prompt, prep_res["input"])
        if prep_res["previous"] is not None and prep_res["feedback"] is not None:
            revise = f"A reviewer's feedback on that response:\n{prep_res['feedback']}\n\nWrite an improved response."
            messages += [{"role": "assistant", "content": prep_res["previous"]}, {"role": "user", "content": revise}]
        return await self.llm_func(messages)

    async def post_async(self, shared: Shared, prep_res: dict[str, Any], exec_res: Any) -> Action:
        shared["generated_response"] = llm_text(exec_res)
        return None


class EvaluatorNode(AsyncNode[dict[str, str], Any]):
    """Scores ``shared["generated_response"]`` against the criteria: ``"accept"`` or ``"refine"``.

    The feedback goes to ``shared["evaluation_feedback"]``, its ``Score: N`` to
    ``shared["evaluation_score"]`` (``None`` when absent) and the round count to
    ``shared["iteration"]``. It accepts, and sets ``shared["_exit"]``, when the score is
    at least ``accept_score`` or after ``max_iterations`` rounds.
    """

    def __init__(
        self, llm_func: LLMFunc, evaluation_criteria: str, max_iterations: int = 3, *, accept_score: int = 9
    ) -> None:
        super().__init__(node_id="evaluator")
        self.llm_func = llm_func
        self.criteria = evaluation_criteria
        self.max_iterations = max_iterations
        self.accept_score = accept_score

    async def prep_async(self, shared: Shared) -> dict[str, str]:
        return {"response": shared.get("generated_response", ""), "criteria": self.criteria}

    async def exec_async(self, prep_res: dict[str, str]) -> Any:
        system = (
            f"Review the response against these criteria:\n{prep_res['criteria']}\n\n"
            "Start with a line 'Score: N' (N from 1 to 10), then say concretely what would improve it."
        )
        return await self.llm_func(_ask(system, f"Response to review:\n{prep_res['response']}"))

    async def post_async(self, shared: Shared, prep_res: dict[str, str], exec_res: Any) -> Action:
        shared["evaluation_feedback"] = feedback = llm_text(exec_res)
        found = _SCORE.search(feedback)
        shared["evaluation_score"] = score = int(found.group(1)) if found else None
        shared["iteration"] = shared.get("iteration", 0) + 1
        if shared["iteration"] >= self.max_iterations or (score is not None and score >= self.accept_score):
            shared["_exit"] = True
            return "accept"
        return "refine"


def create_evaluator_optimizer(
    llm_func: LLMFunc, generation_prompt: str, evaluation_criteria: str, max_iterations: int = 3
) -> AsyncInteractiveGraph:
    """Generate, evaluate, refine... until accepted; run with ``run_async`` or ``run_interactive_async``.

    Reads ``shared["user_input"]``; the answer is ``shared["generated_response"]``.
    """
    generator = GeneratorNode(llm_func, generation_prompt)
    evaluator = EvaluatorNode(llm_func, evaluation_criteria, max_iterations)
    generator >> evaluator
    evaluator - "refine" >> generator
    graph = _PatternLoop(generator)
    graph.ends = frozenset({"accept"})
    return graph
