"""Corruptions for causal tracing: what the subject looks like in the corrupted run.

Each corruption turns a prompt into one or more corrupted inputs, given as the residual stream
entering block 0 (embeddings), with the same length as the clean prompt. It also says the first
position it changes: earlier positions are identical in both runs, so restoring them is a no-op.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..common.errors import InterpError, TokenizationError
from ..measure.prompts import Prompt
from ..model.runner import Runner


@dataclass
class Corrupted:
    embeds: torch.Tensor  # (samples, T, d_model): the stream entering block 0
    first_changed: int  # positions before this one equal the clean run's
    text: str | None = None


def prompt_seed(seed: int, prompt: Prompt) -> int:
    """A per-prompt seed, so a prompt's noise does not depend on its batch or neighbours."""
    digest = hashlib.sha256(f"{seed}\x00{prompt.text}\x00{prompt.subject_span}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class Noise:
    """Gaussian noise on the subject tokens' embeddings (ROME's causal tracing).

    The noise has standard deviation `scale` × σ, where σ is the standard deviation of the
    entries of the model's token-embedding matrix; `samples` seeded draws are averaged.
    """

    name = "noise"

    def __init__(self, scale: float = 3.0, samples: int = 3):
        if samples < 1:
            raise InterpError(f"noise needs at least one sample, not {samples}")
        self.scale, self.samples = float(scale), int(samples)
        self._sigma: float | None = None

    def sigma(self, model) -> float:
        if self._sigma is None:
            weight = model.hf.get_input_embeddings().weight
            self._sigma = float(weight.detach().float().std())
        return self._sigma

    def spec(self, model) -> dict:
        return {"type": "noise", "scale": self.scale, "samples": self.samples,
                "sigma": self.sigma(model)}

    def __call__(self, model, prompt: Prompt, clean: torch.Tensor, seed: int) -> Corrupted:
        a, b = prompt.subject_span
        gen = torch.Generator().manual_seed(prompt_seed(seed, prompt))
        noise = torch.randn((self.samples, b - a, clean.shape[-1]), generator=gen)
        embeds = clean.unsqueeze(0).repeat(self.samples, 1, 1)
        embeds[:, a:b] += (self.scale * self.sigma(model)) * noise.to(clean)
        return Corrupted(embeds, first_changed=a)


class Swap:
    """A counterfactual prompt (Vig et al. 2020): the prompt's own `corrupt_text` if it has one,
    else the subject replaced by the first of `words` with the subject's token length."""

    name = "swap"
    samples = 1

    def __init__(self, words: Sequence[str] = ("person", "man", "woman")):
        self.words = tuple(words)

    def spec(self, model) -> dict:
        return {"type": "swap", "words": list(self.words)}

    def corrupt_ids(self, model, prompt: Prompt) -> tuple[list[int], str]:
        tok = model.tokenizer
        if prompt.corrupt_text is not None:
            text = prompt.corrupt_text
            ids = tok(text)["input_ids"]
            if len(ids) != len(prompt.input_ids):
                raise TokenizationError(
                    f"the counterfactual {text!r} is {len(ids)} tokens but its prompt "
                    f"{prompt.text!r} is {len(prompt.input_ids)}; swaps must keep the length, so "
                    "positions line up. Reword it, or use corruption='noise'."
                )
            return ids, text
        start = prompt.text.find(prompt.subject)
        lengths = {}
        for word in self.words:
            text = prompt.text[:start] + word + prompt.text[start + len(prompt.subject):]
            ids = tok(text)["input_ids"]
            if len(ids) == len(prompt.input_ids):
                return ids, text
            lengths[word] = len(ids) - (len(prompt.input_ids) - (prompt.subject_span[1]
                                                                 - prompt.subject_span[0]))
        n = prompt.subject_span[1] - prompt.subject_span[0]
        raise TokenizationError(
            f"no swap word has the token length of the subject {prompt.subject!r} ({n} tokens) "
            f"in {prompt.text!r}: {', '.join(f'{w!r} has {k}' for w, k in lengths.items())}. "
            "Pass swap words of that length, keep single-token subjects "
            "(prompts.filter(lambda p: p.subject_span[1] - p.subject_span[0] == 1)), or use noise."
        )

    def __call__(self, model, prompt: Prompt, clean: torch.Tensor, seed: int) -> Corrupted:
        ids, text = self.corrupt_ids(model, prompt)
        differ = [i for i, (a, b) in enumerate(zip(ids, prompt.input_ids)) if a != b]
        if not differ:
            raise InterpError(f"the counterfactual of {prompt.text!r} is the same text: {text!r}")
        embeds = Runner(model).embed(torch.tensor([ids], device=clean.device))
        return Corrupted(embeds, first_changed=differ[0], text=text)


class Custom:
    """A user corruption: `fn(model, prompt)` returns a counterfactual text, its token ids, or
    embeddings (T, d) / (samples, T, d) of the prompt's length."""

    name = "custom"

    def __init__(self, fn: Callable):
        self.fn = fn
        self.samples = 1

    def spec(self, model) -> dict:
        return {"type": "custom", "callable": getattr(self.fn, "__qualname__", repr(self.fn))}

    def __call__(self, model, prompt: Prompt, clean: torch.Tensor, seed: int) -> Corrupted:
        out = self.fn(model, prompt)
        T = len(prompt.input_ids)
        if isinstance(out, str):
            out = model.tokenizer(out)["input_ids"]
        if isinstance(out, torch.Tensor) and out.is_floating_point():
            embeds = out.to(clean).reshape(-1, *out.shape[-2:])
        else:
            ids = torch.as_tensor(list(out), device=clean.device).reshape(1, -1)
            embeds = Runner(model).embed(ids)
        if embeds.shape[1] != T or embeds.shape[2] != clean.shape[-1]:
            raise InterpError(
                f"the custom corruption of {prompt.text!r} has shape {tuple(embeds.shape)}; it "
                f"must be (samples, {T}, {clean.shape[-1]}): same length as the prompt"
            )
        self.samples = embeds.shape[0]
        changed = (embeds != clean.unsqueeze(0)).any(dim=(0, 2)).nonzero()
        first = int(changed[0]) if len(changed) else T
        return Corrupted(embeds, first_changed=first)


def resolve(corruption, *, samples: int | None = None, noise_scale: float = 3.0,
            swap_words: Sequence[str] | None = None):
    """A corruption object from a name ("noise", "swap"), an object, or a callable."""
    if corruption == "noise":
        return Noise(scale=noise_scale, samples=3 if samples is None else samples)
    if corruption == "swap":
        return Swap(swap_words) if swap_words else Swap()
    if isinstance(corruption, (Noise, Swap, Custom)):
        return corruption
    if callable(corruption):
        return Custom(corruption)
    raise InterpError(f"unknown corruption {corruption!r}: use 'noise', 'swap' or a callable")
