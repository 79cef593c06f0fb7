"""Proof that an export reproduces the model: reload it in a fresh Python process (so nothing of
this one, such as hooks, the bridge or cached weights, can help it) and compare last-token logits.

`main(["--check", REQUEST.json])`, run in a fresh interpreter, is the checker.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ..model.fingerprint import canonical_state_dict, weights_fingerprint
from .errors import ExportError, VerificationError
from .result import FORMATS, ExportResult
from .safetensors_file import reload_safetensors

F32_TOLERANCE = 1e-5  # max |Δ logit| an f32 export may show; in practice it is exactly 0

CHECK_TIMEOUT_S = 900


def verify_export(model, written: Path, result: ExportResult) -> None:
    ids = [model.tokenizer(t)["input_ids"] for t in result.prompts]
    expected = last_token_logits(model.hf, ids, model.device)
    with tempfile.TemporaryDirectory(prefix="interp-export-check-") as work:
        request = {"format": result.format, "path": str(written), "ids": ids,
                   "texts": list(result.prompts), "dtype": str(model.dtype).removeprefix("torch."),
                   "device": str(model.device), "out": work}
        report = _run_check(request)
        got = _load_logits(Path(work) / "logits.safetensors")
    result.max_abs_diff, result.kl = compare_logits(expected, got)
    reloaded_ids = report["tokenizer_ids"]
    result.tokenizer_ok = None if reloaded_ids is None else reloaded_ids == ids
    exact = result.dtype == "f32" and model.dtype == torch.float32
    result.weights_identical = (report["fingerprint"] == result.fingerprint) if exact else None
    finite = math.isfinite(result.max_abs_diff) and math.isfinite(result.kl)
    logits_ok = finite and (result.max_abs_diff <= F32_TOLERANCE if exact else True)
    result.ok = logits_ok and result.tokenizer_ok is not False
    if exact and not logits_ok:
        raise VerificationError(
            f"the {result.format} f32 export does not reproduce the model: max |Δlogit| = "
            f"{result.max_abs_diff:.3g} over {len(ids)} prompts (tolerance {F32_TOLERANCE}), so "
            "nothing was written. This is an exporter bug for this architecture; please report "
            "it (export(..., verify=False) writes the file anyway)."
        )


@torch.no_grad()
def last_token_logits(hf, ids: list[list[int]], device) -> torch.Tensor:
    """(n_prompts, vocab) float32 logits at each prompt's last token, one unpadded forward each."""
    rows = [hf(torch.tensor([seq], device=device)).logits[0, -1].float().cpu() for seq in ids]
    return torch.stack(rows)


def compare_logits(expected: torch.Tensor, got: torch.Tensor) -> tuple[float, float]:
    """(max |difference|, mean KL(expected ‖ got)) of two (n, vocab) logit tables."""
    if expected.shape != got.shape:
        raise VerificationError(f"the reloaded export gives logits of shape {tuple(got.shape)}, "
                                f"the model {tuple(expected.shape)}: nothing was written")
    p, q = expected.double().log_softmax(-1), got.double().log_softmax(-1)
    kl = (p.exp() * (p - q)).sum(-1).mean()
    return float((expected - got).abs().max()), max(float(kl), 0.0)


def _run_check(request: dict) -> dict:
    req = Path(request["out"]) / "request.json"
    req.write_text(json.dumps(request))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    # The package root first on the path, so the child imports this very interp.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    try:
        # -c rather than -m: the package imports this module, and -m would run a second copy.
        code = "import sys; from interp.export.check import _main; sys.exit(_main(sys.argv[1:]))"
        proc = subprocess.run([sys.executable, "-c", code, "--check", str(req)],
                              env=env, capture_output=True, text=True, check=False,
                              timeout=CHECK_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise VerificationError(f"reloading the export took over {CHECK_TIMEOUT_S} s; nothing "
                                "was written (export(..., verify=False) skips the check)") from e
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise VerificationError(
            f"the {request['format']} export could not be reloaded in a fresh process, so nothing "
            f"was written. The reload said:\n{tail}")
    return json.loads((Path(request["out"]) / "report.json").read_text())


def _load_logits(path: Path) -> torch.Tensor:
    from safetensors.torch import load_file

    return load_file(str(path))["logits"]


def reload(path: str | os.PathLike, format: str | None = None, *, dtype=torch.float32,
           attn_implementation: str | None = None):
    """Load an export with plain transformers: (HF causal LM, tokenizer or None).

    format: inferred from the path when None (a directory is 'hf', *.gguf is 'gguf', anything
    else 'safetensors'). A safetensors export builds the model from the config stored in its
    metadata and re-ties the weights it left out."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    format = format or ("hf" if path.is_dir() else "gguf" if path.suffix == ".gguf"
                        else "safetensors")
    kw = {"dtype": dtype}
    if attn_implementation:
        kw["attn_implementation"] = attn_implementation
    if format == "hf":
        return (AutoModelForCausalLM.from_pretrained(path, **kw).eval(),
                AutoTokenizer.from_pretrained(path))
    if format == "gguf":
        return (AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, **kw).eval(),
                AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name))
    if format == "safetensors":
        return reload_safetensors(path, kw), None
    raise ExportError(f"unknown export format {format!r}: choose one of {', '.join(FORMATS)}")


def _check_main(request_path: str) -> None:
    """The fresh-process side of the verification: reload, tokenize, run, write results."""

    req = json.loads(Path(request_path).read_text())
    dtype = getattr(torch, req["dtype"])
    if req["format"] == "gguf":
        _memoise_gguf_parsing()
    hf, tok = reload(req["path"], req["format"], dtype=dtype,
                     attn_implementation="eager")  # the TransformerBridge runs eager attention
    hf = hf.to(req["device"])
    logits = last_token_logits(hf, req["ids"], req["device"])
    from safetensors.torch import save_file

    out = Path(req["out"])
    save_file({"logits": logits.contiguous()}, str(out / "logits.safetensors"))
    report = {
        "tokenizer_ids": None if tok is None else [tok(t)["input_ids"] for t in req["texts"]],
        "fingerprint": weights_fingerprint(canonical_state_dict(hf)),
    }
    (out / "report.json").write_text(json.dumps(report))


def _memoise_gguf_parsing() -> None:
    """transformers' GGUF loader parses the file's metadata three times (config, weights,
    tokenizer) and rebuilds the same tensor-name map once per module; this one-shot process
    memoises both, which changes nothing that is read but halves the reload time."""
    import gguf

    if hasattr(gguf, "GGUFReader") and hasattr(gguf, "get_tensor_name_map"):
        gguf.GGUFReader = functools.lru_cache(maxsize=2)(gguf.GGUFReader)
        gguf.get_tensor_name_map = functools.lru_cache(maxsize=8)(gguf.get_tensor_name_map)


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "--check":
        _check_main(argv[1])
        return 0
    print("usage: python -m interp.export.check --check REQUEST.json   (the export verifier; "
          "use interp.export() to export)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
