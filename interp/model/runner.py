"""Resumable forward passes: run a model's blocks from any layer on a given residual stream and
read the next-token logits only at the positions a metric needs.

TransformerBridge's own `start_at_layer` still executes the earlier blocks (it discards their
output), so it saves nothing; here the HF body runs over only the blocks from `start` on. Hooks
added on the bridge fire as usual, because those blocks are the bridge's wrapped modules.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from .upstream import cache_kwargs, check_cache_filled

class Runner:
    def __init__(self, model):
        self.model = model
        self.body = model.hf.base_model
        self.lm_head = model.hf.get_output_embeddings()
        adapter = model.arch.adapter
        self.blocks_attr = adapter.blocks
        # A learned position embedding the body adds to inputs_embeds (GPT-2's wpe), or None.
        self.positions = getattr(self.body, adapter.positions) if adapter.positions else None
        # Gemma 2 soft-caps its logits (cap · tanh(logits / cap)) in the LM head's caller.
        self.softcap = getattr(model.hf.config, "final_logit_softcapping", None)
        self.n_layers = model.arch.n_layers

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The residual stream entering block 0 (token embeddings, scaled where the family's
        embedding module scales them, plus learned positions where the family has them)."""
        return self.embed_at(input_ids, 0)

    def embed_at(self, input_ids: torch.Tensor, offset: int) -> torch.Tensor:
        """Like `embed`, for tokens that continue a sequence already `offset` tokens long."""
        x = self.body.get_input_embeddings()(input_ids)
        if self.positions is not None:
            pos = torch.arange(offset, offset + input_ids.shape[1], device=input_ids.device)
            x = x + self.positions(pos)
        return x

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits from the final (normed) hidden states: the LM head, soft-capped where the
        family caps them."""
        return self._cap(self.lm_head(hidden))

    def _cap(self, logits: torch.Tensor) -> torch.Tensor:
        if self.softcap is None:
            return logits
        return torch.tanh(logits / self.softcap) * self.softcap

    @contextlib.contextmanager
    def _blocks_from(self, start: int, stop: int | None = None):
        """The body with only blocks start..stop − 1. Families whose blocks differ by kind
        (`config.layer_types`: sliding-window or full attention, each with its own mask and
        rotary base) pick a block's kind by its index in the list the body loops over, so that
        list is cut the same way for the forward (pinned by tests/test_upstream.py)."""
        blocks = getattr(self.body, self.blocks_attr)
        config = self.body.config
        kinds = getattr(config, "layer_types", None)
        setattr(self.body, self.blocks_attr, nn.ModuleList(list(blocks)[start:stop]))
        if kinds is not None:
            config.layer_types = list(kinds)[start:stop]
        try:
            yield
        finally:
            setattr(self.body, self.blocks_attr, blocks)
            if kinds is not None:
                config.layer_types = kinds

    def final_hidden(self, resid: torch.Tensor, start: int = 0, *, prefix=None,
                     keep_cache: bool = False, stop: int | None = None, grows: bool = False):
        """Run blocks `start`..end on `resid` (the stream entering block `start`), then the final
        norm. Rows may be right-padded: causal attention keeps padding out of real positions.

        prefix: an HF cache with the keys and values of the positions before `resid`'s first
        one, at every layer; `resid` then holds only the later positions. keep_cache: also
        return the cache of this run (keys/values at every layer). stop: run only the blocks
        before `stop` (for reading activations there; the output is then not the model's).
        grows: hooks may append rows to the stream entering a block (rows that join the forward
        there); the causal mask then goes in as one 4D mask that every row shares, which
        transformers takes as it is, and a `prefix` holds at each layer the rows alive there."""
        offset = prefix.get_seq_length() if prefix is not None else 0
        n = resid.shape[1]
        positions = torch.arange(offset, offset + n, device=resid.device)
        x = resid
        if self.positions is not None:
            # The body adds its position embeddings to inputs_embeds; take them out beforehand.
            x = x - self.positions(positions)
        cache = prefix if prefix is not None else (new_cache() if keep_cache else None)
        kw = {} if cache is None else cache_kwargs(self.body, cache)
        if grows:
            kw["attention_mask"] = causal_mask(n, offset, x.dtype, x.device,
                                               self._windows(start, stop))
        with self._blocks_from(start, stop):
            out = self.body(inputs_embeds=x, position_ids=positions[None],
                            use_cache=cache is not None, **kw)
        if cache is not None and len(range(self.n_layers)[start:stop]):
            check_cache_filled(cache, start, offset + n)
        return (out.last_hidden_state, cache) if keep_cache else out.last_hidden_state

    def _windows(self, start: int, stop: int | None) -> dict | None:
        """{layer kind: its sliding window (None: full attention)} of the blocks start..stop − 1
        when the family's blocks differ by kind; None when they do not."""
        config = self.body.config
        kinds = getattr(config, "layer_types", None)
        if not kinds:
            return None
        window = getattr(config, "sliding_window", None)
        return {k: window if k == "sliding_attention" else None for k in set(kinds)}

    def logits_at(self, resid: torch.Tensor, start: int, positions: torch.Tensor, *,
                  prefix=None, select=None, grows: bool = False) -> torch.Tensor:
        """Next-token logits at one position per row, running from block `start`: over the
        whole vocabulary (rows, vocab), or only for the token ids in `select`. `positions`
        covers the rows at the end of the forward (see `final_hidden`'s `grows`)."""
        hidden = self.final_hidden(resid, start, prefix=prefix, grows=grows)
        return self.unembed_at(hidden, positions, select=select)

    def logits_of(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The logit of token ids[i] at hidden state hidden[i] (n,), without the rest of the
        vocabulary: soft-capped where the family caps its logits."""
        head = self.lm_head
        out = (hidden * head.weight[ids]).sum(-1)
        if getattr(head, "bias", None) is not None:
            out = out + head.bias[ids]
        return self._cap(out).float()

    def unembed_at(self, hidden: torch.Tensor, positions: torch.Tensor, *,
                   select=None) -> torch.Tensor:
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        h = hidden[rows, positions]
        if select is None:
            return self.unembed(h).float()
        ids = torch.as_tensor(select, device=h.device)
        head = self.lm_head
        bias = head.bias[ids] if getattr(head, "bias", None) is not None else None
        return self._cap(torch.nn.functional.linear(h, head.weight[ids], bias)).float()


def causal_mask(n: int, offset: int, dtype, device, windows: dict | None = None):
    """The additive causal mask (1, 1, n, offset + n) of `n` positions after `offset` cached ones:
    one batch row, so it serves a forward whose batch grows. windows: {layer kind: sliding
    window or None} for families whose blocks differ by kind (`config.layer_types`): then a
    mask per kind, as those bodies take it, each position seeing only the last `window`
    positions in the sliding kinds."""
    mask = torch.full((n, offset + n), torch.finfo(dtype).min, dtype=dtype, device=device)
    full = mask.triu(offset + 1)[None, None]
    if not windows:
        return full
    out = {}
    for kind, window in windows.items():
        if window is None:
            out[kind] = full
        else:  # query offset + i sees keys j with offset + i − window < j ≤ offset + i
            out[kind] = torch.minimum(full, mask.tril(offset - window)[None, None])
    return out


def token_bytes(model) -> int:
    """Bytes one token of a forward keeps alive (see `token_budget`)."""
    arch = model.arch
    size = next(model.hf.parameters()).element_size()
    return size * (2 * (8 * arch.d_model + 3 * arch.d_mlp)
                   + 2 * arch.n_layers * arch.n_kv_heads * arch.d_head)


def token_budget(model, fraction: float = 0.25, cpu_most: int = 8192) -> int:
    """How many tokens one forward may hold: a `fraction` of the free memory of the model's
    device over what a token keeps alive: the activations of the block running (its stream,
    attention and MLP intermediates, twice for the copies hooks make) and its keys and values
    in every layer. On a CPU at most `cpu_most`: larger matrices are no faster there, and they
    fall out of the caches. benchmarks/large_models.py measures the estimate against a forward
    (random Llama-3.2-1B shape: 1.23x more than the estimate before the keys and values
    counted)."""
    per_token = token_bytes(model)
    if model.device.type == "cuda":
        free = torch.cuda.mem_get_info(model.device)[0]
        return max(1, int(fraction * free / per_token))
    import os

    free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return max(1, min(cpu_most, int(fraction * free / per_token)))


def device_rows(model, rows: int, tokens: int) -> int:
    """Rows per forward for sequences of up to `tokens` tokens: `rows` (a batch size measured
    on a CPU, where larger batches are no faster) on a CPU; on a GPU, as many as fit
    `token_budget` when that is more."""
    if model.device.type != "cuda":
        return rows
    return max(rows, token_budget(model) // max(1, tokens))


def pad_ids(model, seqs) -> torch.Tensor:
    """Right-padded token ids (rows, longest); causal attention keeps padding out of real tokens."""
    width = max(map(len, seqs))
    pad = model.tokenizer.pad_token_id or 0
    ids = torch.full((len(seqs), width), pad, dtype=torch.long, device=model.device)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.as_tensor(list(s), device=model.device)
    return ids


def capture(names):
    """Hooks that store each named activation (detached): returns (store, [(name, hook)])."""
    store = {}

    def saver(name):
        def save(act, hook):
            store[name] = act.detach()
        return save

    return store, [(n, saver(n)) for n in names]


@contextlib.contextmanager
def frozen(model):
    """Weights that take no gradient, for backward passes that only want activation gradients
    (computing each weight's gradient would double their cost)."""
    params = [p for p in model.hf.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in params:
            p.requires_grad_(True)


def new_cache():
    from transformers import DynamicCache

    return DynamicCache()


def kv_prefix(cache, rows: torch.Tensor, length: int, alive=None):
    """A fresh cache holding the first `length` positions of `rows` of `cache`, at every layer;
    with `alive` (a row count per layer), only the first `alive[l]` of `rows` at layer l, for a
    forward whose batch grows (`Runner.final_hidden`'s `grows`)."""
    out = copy_cache(cache)
    out.batch_select_indices(rows)
    extra = out.get_seq_length() - length
    if extra > 0:  # a negative count removes that many positions, in every version we support
        out.crop(-extra)
    if alive is not None:
        for layer, k in zip(out.layers, alive):
            if 0 < k < len(rows):  # (layers before the forward's start are not read)
                layer.batch_select_indices(torch.arange(int(k), device=rows.device))
    return out


def copy_cache(cache):
    """A fresh cache over the same keys/values: a forward appends to the cache it is given."""
    return copy.deepcopy(cache)
