"""Stage 4, export: a model (usually an edited one) as a Hugging Face directory, one safetensors
file, or a GGUF file for llama.cpp-based tools, each proven to reproduce the model.

Every export is written to a temporary path, reloaded in a fresh Python process, compared with
the in-memory model on the last-token logits of a few prompts, and only then moved into place.
A failure at any step leaves no output behind.

    result = export(model, "out/smollm2-debiased", "hf", edit=edit)
    result = export(model, "out/smollm2-debiased.gguf", "gguf", dtype="q8_0")
    print(result.summary())

One module per format (`hf`, `safetensors_file`, `gguf_file`), the shared tensors, model card
and fresh-process check, and `run.export`, the entry point. Note that `interp.export` is the
function; import this package's modules as `from interp.export import gguf_file`.

May import: interp.common, interp.model, interp.measure, interp.locate, interp.mitigate.
"""

from .check import reload
from .errors import ExportError, UnsupportedExportError, VerificationError
from .result import DTYPES, FORMATS, ExportResult
from .run import export

__all__ = ["DTYPES", "FORMATS", "ExportError", "ExportResult", "UnsupportedExportError",
           "VerificationError", "export", "reload"]
