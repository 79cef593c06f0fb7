"""The model card (README.md) of an `hf` export: source, fingerprint, the edit, the verification.
"""

from __future__ import annotations

import json

from .result import ExportResult


def model_card(model, meta: dict, edit=None, result: ExportResult | None = None) -> str:
    """README.md for an 'hf' export: source, fingerprint, the edit's provenance, verification."""
    source = meta["source"]
    lines = ["---", "library_name: transformers"]
    if source.get("hub_id"):
        lines.append(f"base_model: {source['hub_id']}")
    lines += ["tags:", "- interp"] + (["- bias-mitigation", f"- {edit.meta.get('method', 'edit')}"]
                                      if edit is not None else [])
    lines += ["---", "", f"# {model.name} (exported by interp {meta['interp_version']})", ""]
    lines += [
        f"- Source: {_describe_source(source)}",
        ("- Weights fingerprint (blake2b of the exported weights at export time): "
         f"`{meta['fingerprint']}`"),
        f"- Weights: `model.safetensors`, {meta['dtype']}; exported {meta['created']}",
        "",
    ]
    if edit is not None:
        lines += _edit_section(edit.meta, meta.get("edit_applied_by_export", False))
    else:
        lines += ["No interp edit was recorded with these weights.", ""]
    if result is not None and result.ok is not None:
        lines += [
            "## Verification", "",
            ("Reloaded in a fresh process and compared with the in-memory model on the last-token "
             f"logits of {len(result.prompts)} prompts: max |Δlogit| = {result.max_abs_diff:.3g}, "
             f"mean KL = {result.kl:.3g}, tokenizer round-trip: {result.tokenizer_ok}."), "",
        ]
    lines += [("Load it with `transformers.AutoModelForCausalLM.from_pretrained(this_dir)`, or "
               "`interp.load_model(this_dir)`. Full provenance: `interp_provenance.json`."), ""]
    return "\n".join(lines)


def _describe_source(source: dict) -> str:
    kind = source.get("kind", "unknown")
    detail = source.get("hub_id") or source.get("path") or (
        f"seed {source['seed']}" if "seed" in source else "")
    return f"{kind} ({detail})" if detail else kind


def _edit_section(em: dict, applied_here: bool) -> list[str]:
    rows = [("method", em.get("method")), ("layers", em.get("layers")),
            ("attention layers", em.get("attn_layers") or None), ("λ (lam)", em.get("lam")),
            ("fitted on fingerprint", f"`{em.get('fingerprint')}`"),
            ("edit prompts", em.get("n_prompts", len(em.get("prompts", []) or []))),
            ("subjects", len(em.get("subjects", []) or [])), ("seed", em.get("seed")),
            ("statistics tokens", em.get("stats_tokens")), ("created", em.get("created"))]
    out = ["## Edit", "", "| field | value |", "| --- | --- |"]
    out += [f"| {k} | {v} |" for k, v in rows if v is not None]
    for key in ("targets", "metrics"):
        if em.get(key):
            out += ["", f"{key.capitalize()}:", "", "```json",
                    json.dumps(em[key], indent=2, default=str), "```"]
    out += ["", "The weight updates are in `edit.safetensors` (`interp.Edit.load`)"
            + ("; the export applied the edit to the source weights." if applied_here else "."), ""]
    return out
