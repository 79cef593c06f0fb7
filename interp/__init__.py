"""interp: locate where a language model carries social bias and remove it with a verified edit.

The package follows the loop, one subpackage per stage; imports point one way, down this list:

    common/    errors, atomic writes, figure files (everything may use it)
    model/     load, architecture adapters, the resumable runner, fingerprints
    measure/   prompt sets, metrics, bias reports, capability and benchmark suites, evaluate
    locate/    corruptions, the tracing engines, TraceResult and its figures
    mitigate/  key statistics, LSDM, Edit, verify
    export/    HF directory, safetensors and GGUF writers, reload check, model card
    studies/   studies built on the loop
    cli/, sweep/, loop.py (the demo), report.py: the applications on top

This module is the public surface: the names below are what a user needs for the whole loop.
"""

import sys

from .common.errors import (
    EmptyPromptSetError,
    InterpError,
    ModelLoadError,
    TemplateError,
    TokenizationError,
    UnsupportedArchitectureError,
)
from .common.figures import save_figure
from .common.version import __version__
from .export.result import ExportResult
from .export.run import export
from .locate.atlas import Atlas, atlas
from .locate.result import TraceComparison, TraceResult
from .locate.spec import TraceSpec
from .locate.trace import trace
from .loop import DemoResult, demo
from .measure import capability, metrics, prompts, suites
from .measure.bias import BiasReport, bias
from .measure.contrast import Contrast, ContrastReport, contrast, contrasts
from .measure.evaluate import EvalReport, evaluate
from .measure.prompts import Prompt, PromptSet
from .mitigate.alignez import RepresentationEdit, alignez
from .mitigate.debias import debias
from .mitigate.dpo import dpo, preference_margins
from .mitigate.edit import Edit, EditError
from .mitigate.finetune import FTSettings, finetune
from .mitigate.lsdm import EDIT_TEMPLATES, LAST_TOKEN_TEMPLATES, LSDMSettings, lsdm
from .mitigate.sites import Sites, find_sites, locate_sites
from .mitigate.verify import Verification, verify, verify_edit
from .model.arch import Architecture
from .model.load import Model, load_model, wrap
from .studies.bbq import PersonaBias, persona_bias
from .studies.debiasing import persona_alignez, story_dpo
from .studies.reward import RewardAudit, reward_audit
from .studies.stories import StoryConsistency, preference_pairs, story_consistency
from .sweep import SweepResult, run_sweep

__all__ = [
    "EDIT_TEMPLATES", "LAST_TOKEN_TEMPLATES", "Architecture", "Atlas", "BiasReport", "Contrast",
    "ContrastReport", "DemoResult", "Edit", "EditError", "EmptyPromptSetError", "EvalReport",
    "ExportResult", "FTSettings", "InterpError", "LSDMSettings", "Model", "ModelLoadError",
    "PersonaBias", "Prompt", "PromptSet", "RepresentationEdit", "RewardAudit", "Sites",
    "StoryConsistency", "SweepResult", "TemplateError", "TokenizationError", "TraceComparison",
    "TraceResult", "TraceSpec", "UnsupportedArchitectureError", "Verification", "__version__",
    "alignez", "atlas", "bias", "capability", "contrast", "contrasts", "debias", "demo", "dpo",
    "evaluate", "export", "find_sites", "finetune", "load_model", "locate_sites", "lsdm",
    "metrics", "persona_alignez", "persona_bias", "preference_margins", "preference_pairs",
    "prompts", "reward_audit", "run_sweep", "save_figure", "story_consistency", "story_dpo",
    "suites", "trace", "verify", "verify_edit", "wrap",
]

# The measuring modules that were public before the stage folders keep their import paths
# (`from interp.prompts import PromptSet`, `import interp.suites`).
for _name, _module in {"capability": capability, "metrics": metrics, "prompts": prompts,
                       "suites": suites}.items():
    sys.modules[f"{__name__}.{_name}"] = _module
del _name, _module
