"""graphwire_codegen: turns ``spec/asyncapi.yaml`` into generated code for every target.

Generated files live only in ``_generated/`` folders and start with a one-line header
naming the spec and its sha256. The generator never touches hand-written code.
"""

from graphwire_codegen.generate import TARGETS, Target, generate_all, render_target
from graphwire_codegen.spec import FrameChecker, SpecError, lint_spec, load_spec, schema_validator

__all__ = [
    "TARGETS",
    "FrameChecker",
    "SpecError",
    "Target",
    "generate_all",
    "lint_spec",
    "load_spec",
    "render_target",
    "schema_validator",
]
