"""AlignEZ-style representation editing (after arXiv 2406.03642): no training, no weight update.

From two sets of the model's own states, read where it produces a harmful output and where it
produces a helpful one, each layer's harmful directions are the top right singular vectors of
the harmful states less the mean helpful state, and its helpful direction the top one of the
helpful states less the mean harmful state, made orthogonal to the harmful ones. At inference a
hook edits the hidden state h at every position of each chosen layer:

    h ← h − α · V Vᵀ h + β · u uᵀ h          (V: harmful directions, u: helpful direction)

so it projects out (α = 1) the harmful component and amplifies the helpful one; with
`center=True` it acts about the mean helpful state μ instead (h − μ in place of h on the right),
removing only how far a state lies off the helpful ones. The uncentered map is linear and
static. On an MLP or attention output (`site="mlp"`/`"attn"`) it folds exactly into
that output projection, W ← (I − α V Vᵀ + β u uᵀ) W, a rank-(k+1) `Edit` that exports like any
other (`to_edit`). On the residual stream (`site="resid"`, AlignEZ's own choice) it cannot fold:
the stream at a layer is the sum of the embedding and every earlier block's output, and the
blocks below read it unedited, so no one weight holds the change; `to_edit` says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..common.errors import EmptyPromptSetError
from ..common.io import atomic_path
from ..model.runner import Runner, capture, pad_ids
from .edit import Edit, EditError, Reversible
from .norms import require_linear

SITES = {"resid": "resid_post", "mlp": "mlp", "attn": "attn"}


def _check(site: str, layers, model) -> list[int]:
    if site not in SITES:
        raise EditError(f"site must be one of {tuple(SITES)}, not {site!r}")
    layers = sorted({int(l) for l in layers})
    if not layers:
        raise EditError("no layers to edit: pass layers=[...]")
    for l in layers:
        model.arch.check_layer(l)
    return layers


@dataclass
class RepresentationEdit(Reversible):
    """Per layer, harmful directions V (d_model, k) and a helpful direction u (d_model,), with
    strengths `alpha`, `beta` and the `site` they act on; `meta` holds the provenance. Apply and
    revert like an `Edit` (`apply`, `revert`, `applied()`): hooks on the model, weights
    untouched."""

    directions: dict[int, tuple[torch.Tensor, torch.Tensor]]
    alpha: float = 1.0
    beta: float = 0.0
    site: str = "resid"
    meta: dict = field(default_factory=dict)
    # per layer, the mean helpful state the map acts about (centered edits); empty: about 0
    centers: dict[int, torch.Tensor] = field(default_factory=dict)
    _applied_to: dict = field(default_factory=dict, repr=False)
    _noun = "representation edit"

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    def __repr__(self) -> str:
        k = {l: V.shape[1] for l, (V, _) in self.directions.items()}
        return (f"RepresentationEdit(site={self.site!r}, layers={self.layers}, directions per "
                f"layer={k}, α={self.alpha}, β={self.beta}, centered={bool(self.centers)})")

    def matrix(self, layer: int) -> torch.Tensor:
        """The map the edit applies at `layer`, I − α V Vᵀ + β u uᵀ, (d_model, d_model) float64."""
        V, u = (t.double() for t in self.directions[layer])
        eye = torch.eye(V.shape[0], dtype=torch.float64)
        return eye - self.alpha * V @ V.T + self.beta * torch.outer(u, u)

    def _hook_name(self, model, layer: int) -> str:
        return model.arch.hook(SITES[self.site], layer)

    def _put(self, model):
        self.check_model(model)
        handles = []
        for layer in self.layers:
            V, u = self.directions[layer]
            point = model.bridge.hook_dict[self._hook_name(model, layer)]
            handles.append(point.register_forward_hook(
                self._editor(V, u, self.centers.get(layer))))
        return handles

    def _editor(self, V: torch.Tensor, u: torch.Tensor, center: torch.Tensor | None):
        alpha, beta = self.alpha, self.beta

        # A torch forward hook on the hook point, not a TransformerLens hook: those are
        # cleared by every `bridge.hooks()` block that ends, and an applied edit must persist.
        def edit(module, args, h):
            Vh, uh = V.to(h), u.to(h)
            x = h if center is None else h - center.to(h)
            return h - alpha * (x @ Vh) @ Vh.T + beta * (x @ uh)[..., None] * uh
        return edit

    def _take(self, model, handles) -> None:
        for h in handles:
            h.remove()

    def to_edit(self, model) -> Edit:
        """The same change as weight updates of the edited output projections (site "mlp" or
        "attn"): ΔW = (M − I) W = [−αV, βu] · ([V, u]ᵀ W), a rank-(k+1) `Edit` that saves and
        exports like an LSDM edit."""
        if self.centers:
            raise EditError(
                "a centered representation edit cannot be folded into weights: acting about the "
                "mean helpful state adds a constant to every output, and the output projections "
                "of this architecture have no bias to hold it. Fit it with center=False to "
                "export it, or keep it as a hook (RepresentationEdit.save)")
        if self.site == "resid":
            raise EditError(
                "a residual-stream representation edit cannot be folded into weights: the stream "
                "at a layer is the sum of the embedding and every earlier block's output, and the "
                "blocks below that layer read it unedited, so no single weight carries the change. "
                "Fit it with site='mlp' or site='attn' to export it, or keep it as a hook "
                "(RepresentationEdit.save)")
        require_linear(model, [(self.site, l) for l in self.layers], "to_edit")
        factors = {}
        for layer in self.layers:
            V, u = (t.double() for t in self.directions[layer])
            W = model.arch.edit_weight(model.bridge, self.site, layer).detach().double().cpu()
            left = torch.cat([-self.alpha * V, self.beta * u[:, None]], 1)
            right = W.T @ torch.cat([V, u[:, None]], 1)
            factors[layer] = (left.float(), right.float())
        meta = {**self.meta, "method": "alignez", "layers": self.layers,
                "folded_from": "representation edit"}
        if self.site == "mlp":
            return Edit(factors, meta)
        meta["attn_layers"] = self.layers
        return Edit({}, meta, attn=factors)

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        tensors = {}
        for l, (V, u) in self.directions.items():
            tensors[f"layer{l}.V"] = V.contiguous()
            tensors[f"layer{l}.u"] = u.contiguous()
        for l, c in self.centers.items():
            tensors[f"layer{l}.center"] = c.contiguous()
        meta = {**self.meta, "alpha": self.alpha, "beta": self.beta, "site": self.site}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"interp_representation_edit": json.dumps(meta)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "RepresentationEdit":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            doc = (f.metadata() or {}).get("interp_representation_edit")
            if doc is None:
                raise EditError(f"{path} is not a representation edit: pass a file written by "
                                "RepresentationEdit.save")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(doc)
        layers = sorted({int(k.split(".")[0][5:]) for k in tensors})
        directions = {l: (tensors[f"layer{l}.V"], tensors[f"layer{l}.u"]) for l in layers}
        centers = {l: tensors[f"layer{l}.center"] for l in layers
                   if f"layer{l}.center" in tensors}
        return cls(directions, meta.pop("alpha"), meta.pop("beta"), meta.pop("site"), meta,
                   centers=centers)


@torch.no_grad()
def last_token_states(model, texts, hook_names, *, batch_size: int = 32) -> dict:
    """{hook name: (n, d_model) float64}: each text's state at its last token."""
    tok = model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    runner = Runner(model)
    order = sorted(range(len(tok)), key=lambda i: len(tok[i]))
    rows = {n: [None] * len(tok) for n in hook_names}
    for b in range(0, len(order), batch_size):
        batch = order[b: b + batch_size]
        ids = pad_ids(model, [tok[i] for i in batch])
        last = torch.tensor([len(tok[i]) - 1 for i in batch], device=ids.device)
        store, hooks = capture(hook_names)
        with model.bridge.hooks(fwd_hooks=hooks):
            runner.final_hidden(runner.embed(ids), 0, stop=max(
                int(n.split(".")[1]) for n in hook_names) + 1)
        r = torch.arange(len(batch), device=ids.device)
        for n in hook_names:
            for k, i in enumerate(batch):
                rows[n][i] = store[n][r, last][k].double().cpu()
    return {n: torch.stack(v) for n, v in rows.items()}


def directions_from(helpful: torch.Tensor, harmful: torch.Tensor, k: int):
    """(V, u) from one layer's helpful and harmful states (n, d): V the top-k right singular
    vectors of harmful − mean(helpful), u the top one of helpful − mean(harmful) with V's span
    taken out, each column of unit length and pointing the way its states lie."""
    dh = harmful - helpful.mean(0)
    _, _, vt = torch.linalg.svd(dh, full_matrices=False)
    V = vt[:k].T
    sign = torch.sign((dh @ V).mean(0))
    V = V * torch.where(sign == 0, 1.0, sign).to(V)  # each towards the harmful states
    V = V / V.norm(dim=0, keepdim=True)
    dg = helpful - harmful.mean(0)
    dg = dg - (dg @ V) @ V.T
    _, _, ug = torch.linalg.svd(dg, full_matrices=False)
    u = ug[0]
    u = u * (1 if (dg @ u).mean() >= 0 else -1)
    return V, u / u.norm()


def alignez(model, helpful, harmful, *, layers, k: int = 1, alpha: float = 1.0,
            beta: float = 0.0, site: str = "resid", center: bool = False,
            batch_size: int = 32, source: str = "custom") -> RepresentationEdit:
    """Read each text's state at its last token at every layer's `site`, and build the
    representation edit (see the module docstring). helpful, harmful: texts whose last token
    is where the model produces the helpful or the harmful output (they need not pair up).
    center: act about the mean helpful state, h ← h − α V Vᵀ (h − μ) + β u uᵀ (h − μ), so
    that only how far a state lies off the helpful ones is removed, not the mean content the
    directions share with every state (a hook only: it does not fold into weights)."""
    layers = _check(site, layers, model)
    helpful, harmful = list(helpful), list(harmful)
    if not helpful or not harmful:
        raise EmptyPromptSetError("alignez needs both helpful and harmful texts: one set is "
                                  "empty")
    if k < 1:
        raise EditError(f"k (harmful directions per layer) must be at least 1, not {k}")
    if k >= min(len(harmful), model.arch.d_model):
        raise EditError(f"k={k} harmful directions need more than {k} harmful texts "
                        f"(there are {len(harmful)})")
    names = [model.arch.hook(SITES[site], l) for l in layers]
    good = last_token_states(model, helpful, names, batch_size=batch_size)
    bad = last_token_states(model, harmful, names, batch_size=batch_size)
    directions = {l: tuple(t.float() for t in directions_from(good[n], bad[n], k))
                  for l, n in zip(layers, names)}
    centers = {l: good[n].mean(0).float() for l, n in zip(layers, names)} if center else {}
    meta = {"method": "alignez", "fingerprint": model.fingerprint(), "model": model.name,
            "layers": layers, "k": k, "n_helpful": len(helpful), "n_harmful": len(harmful),
            "source": source}
    return RepresentationEdit(directions, float(alpha), float(beta), site, meta,
                              centers=centers)


def lean_contrasts(model, prompts) -> tuple[list[str], list[str]]:
    """(helpful, harmful) prompts from the model's own pronoun choices on occupation prompts:
    a prompt whose next-token log p(she) − log p(he) leans the way its occupation's stereotype
    does is harmful, one that leans against it helpful (occupations with no stereotype score
    are left out). Each ends where the pronoun is chosen."""
    from ..measure.bias import bias

    f = bias(model, prompts, progress=False).frame
    f = f[f.stereotypical.fillna(0) != 0]
    # stereotypical > 0 is male-stereotyped: leaning he (log-odds < 0) follows it
    follows = (f.logodds * -f.stereotypical) > 0
    return list(f.text[~follows]), list(f.text[follows])
