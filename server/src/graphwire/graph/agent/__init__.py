"""LLM agents on the graph engine: KayGraph 0.3's ``kaygraph.agent``, with its names and store keys.

- Tools (`tools`): `Tool`, `SimpleTool` and `ToolRegistry`; every call answers with
  ``{"success": True, "result": ...}`` or ``{"success": False, "error": ...}``.
- The ReAct loop (`nodes`, `patterns`): `ThinkNode` → `ActNode` → ... → `OutputNode`,
  built by `create_react_agent` and the coding, research, debugging and data-analysis
  agents; `create_file_tools` offers file tools.
- Anthropic's workflow patterns (`anthropic_patterns`): prompt chaining, routing,
  parallelization, orchestrator-workers, evaluator-optimizer.

The LLM is always the caller's async function ``messages -> {"content": reply}``: no SDK,
no network here. The places where graphwire does what KayGraph meant rather than what it
does are listed in ``docs/kaygraph.md``.
"""

from __future__ import annotations

from .anthropic_patterns import (
    ChainStepNode,
    EvaluatorNode,
    GeneratorNode,
    OrchestratorNode,
    RouterNode,
    create_evaluator_optimizer,
    create_orchestrator_workers,
    create_prompt_chain,
    create_router,
    run_parallel_sectioning,
    run_parallel_voting,
)
from .nodes import ActNode, OutputNode, ThinkNode
from .patterns import (
    create_coding_agent,
    create_data_analysis_agent,
    create_debugging_agent,
    create_file_tools,
    create_react_agent,
    create_research_agent,
)
from .tools import SimpleTool, Tool, ToolRegistry

__all__ = [
    "ActNode",
    "ChainStepNode",
    "EvaluatorNode",
    "GeneratorNode",
    "OrchestratorNode",
    "OutputNode",
    "RouterNode",
    "SimpleTool",
    "ThinkNode",
    "Tool",
    "ToolRegistry",
    "create_coding_agent",
    "create_data_analysis_agent",
    "create_debugging_agent",
    "create_evaluator_optimizer",
    "create_file_tools",
    "create_orchestrator_workers",
    "create_prompt_chain",
    "create_react_agent",
    "create_research_agent",
    "create_router",
    "run_parallel_sectioning",
    "run_parallel_voting",
]
