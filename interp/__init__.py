"""interp: locate where a language model carries social bias and remove it with a verified edit."""

from . import metrics, prompts
from .arch import Architecture
from .bias import BiasReport, bias
from .errors import (
    EmptyPromptSetError,
    InterpError,
    ModelLoadError,
    TemplateError,
    TokenizationError,
    UnsupportedArchitectureError,
)
from .models import Model, load_model
from .prompts import Prompt, PromptSet
from .result import TraceComparison, TraceResult
from .trace import TraceSpec, trace
from .edit import Edit, EditError, lsdm
from .evaluate import EvalReport, evaluate
from .verify import Verification, verify
from .export import ExportResult, export
from .sweep import SweepResult, run_sweep
from . import capability, suites

__all__ = [
    "Architecture", "BiasReport", "Edit", "EditError", "EvalReport", "ExportResult",
    "SweepResult", "Verification", "capability", "run_sweep", "evaluate", "export", "lsdm", "suites", "verify", "EmptyPromptSetError", "InterpError", "Model", "ModelLoadError",
    "Prompt", "PromptSet", "TemplateError", "TokenizationError", "UnsupportedArchitectureError",
    "TraceComparison", "TraceResult", "TraceSpec", "bias", "load_model", "metrics", "prompts",
    "trace",
]
__version__ = "0.1.0"
