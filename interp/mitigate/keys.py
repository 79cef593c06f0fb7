"""Where an edit reads its keys: every prompt bare and behind a few generated prefixes, and the
activations at the edited token of each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from ..measure.prompts import PromptSet, tokenize_prompt
from ..model.runner import Runner, capture, device_rows, pad_ids
from .edit import EditError
from .stats import sample

# Where an edit reads its keys and sets its targets, and that token's group in a trace.
SITE_TOKEN = {"subject": "last subject token", "last": "last token"}


def check_site(site: str) -> None:
    if site not in SITE_TOKEN:
        raise EditError(f"site must be one of {tuple(SITE_TOKEN)}, not {site!r}")


@dataclass
class Versions:
    ids: list[list[int]]
    subject_last: list[int]
    prompt: list[int]  # index of the subject (one key and one target each) of every version
    prefixes: list[str]
    subjects: list[str]
    context: list[int] = field(default_factory=list)  # 0: the bare prompt, i: behind prefix i
    slots: list[str] = field(default_factory=list)  # each version's pronoun slot (subject, ...)
    templates: list = field(default_factory=list)  # each version's prompt template (or None)
    groups: list = field(default_factory=list)  # each version's subject group (contrasts)
    declared: list = field(default_factory=list)  # each version's declared group (contrasts)


def generated_prefixes(model, n: int, length: int, seed: int) -> list[str]:
    """Short seeded samples from the model, used as contexts before each prompt (as ROME does)."""

    starters = ["The", "Therefore", "Because", "I", "You", "In", "It", "When"]
    out = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for i in range(n):  # one at a time: starters may differ in length
            ids = sample(model, [starters[i % len(starters)]], length, top_k=5)[0]
            text = " ".join(model.tokenizer.decode(ids, skip_special_tokens=True).split())
            out.append(text.replace("{", "(").replace("}", ")"))
    return out


def versions(model, prompts: PromptSet, prefixes: Sequence[str], site: str = "subject") -> Versions:
    """Every prompt bare and behind each prefix, with the token each is edited at.

    site "subject": the subject's last token. Versions are grouped by subject: that token reads
    only the text before it, so one key (and one target) serves all of a subject's templates,
    and its target must balance them all. site "last": the prompt's last token, where the
    pronoun is predicted. Its key differs with every prefix, and near the top a single change
    there shifts all of them alike (the log-odds read the stream almost linearly), so each
    version has its own key and target: the prefixes only add examples."""
    check_site(site)
    index = {s: i for i, s in enumerate(prompts.subjects())}
    ids, last, owner, context, names, slots, templates = [], [], [], [], [], [], []
    groups, declared = [], []
    for p in prompts:
        start = _subject_start(p)
        for c, prefix in enumerate(["", *prefixes]):
            joint = f"{prefix}. {p.text}" if prefix else p.text
            offset = len(joint) - len(p.text)
            v = tokenize_prompt(model.tokenizer, joint, p.subject, subject_start=offset + start)
            if not hasattr(v, "input_ids"):
                continue  # this prefix merges with the subject's tokens: skip that version
            ids.append(list(v.input_ids))
            if site == "subject":
                last.append(v.subject_last)
                owner.append(index[p.subject])
            else:
                last.append(len(v.input_ids) - 1)
                owner.append(len(names))
                names.append(joint)
            context.append(c)
            slots.append(p.slot)
            templates.append(p.template)
            groups.append(p.group)
            declared.append(p.declared)
    return Versions(ids, last, owner, list(prefixes), names or list(index), context, slots,
                    templates, groups, declared)


def _subject_start(p) -> int:
    """Where the prompt's subject starts in its text: where its template put it, when the
    template fills to the text ("The manager told the {} that" with "man": not inside
    "manager"), else its first occurrence, as `from_records` found it."""
    t = p.template or ""
    if t.count("{}") == 1 and t.replace("{}", p.subject) == p.text:
        return t.index("{}")
    return p.text.find(p.subject)


class SubjectReader:
    """Activations at every version's subject-last token, averaged per edit prompt.

    That token reads only the tokens up to it, so each version is cut there and identical cuts
    (a subject's templates that share the text before it) run once, batched by length. A read
    can keep the stream entering a layer, and a later read can resume from it: the editor's
    bottom-up passes then run only the blocks an earlier layer's update can have changed."""

    def __init__(self, model, v: Versions, batch_size: int = 64):
        self.model, self.runner = model, Runner(model)
        cuts = [tuple(ids[: last + 1]) for ids, last in zip(v.ids, v.subject_last)]
        unique = sorted(set(cuts), key=len)
        where = {c: i for i, c in enumerate(unique)}
        dev = model.device
        self.batches = []
        batch_size = device_rows(model, batch_size, len(unique[-1]))
        for b in range(0, len(unique), batch_size):
            seqs = unique[b: b + batch_size]
            self.batches.append((pad_ids(model, seqs),
                                 torch.tensor([len(c) - 1 for c in seqs], device=dev)))
        self.pick = torch.tensor([where[c] for c in cuts], device=dev)
        self.owner = torch.tensor(v.prompt, device=dev)
        self.kept: tuple[int, list] | None = None  # (layer, stream entering it, per batch)

    @torch.no_grad()
    def read(self, names: Sequence[str], *, start: int = 0, stop: int | None = None,
             keep: int | None = None) -> dict[str, torch.Tensor]:
        """{name: (n_prompts, width) float64} running blocks start..stop − 1; start > 0 resumes
        from the stream kept by the previous read (which must have kept that layer). keep:
        also keep the stream entering this layer (start ≤ keep < stop)."""
        if start and (self.kept is None or self.kept[0] != start):
            raise EditError(f"no stream kept at layer {start} to resume from")
        hooks_keep = []
        if keep is not None and keep > start:
            hooks_keep = [self.model.arch.hook("resid", keep)]
        rows: dict[str, list] = {n: [] for n in names}
        kept = []
        for i, (ids, pos) in enumerate(self.batches):
            store, hooks = capture([*names, *hooks_keep])
            x = self.kept[1][i] if start else self.runner.embed(ids)
            with self.model.bridge.hooks(fwd_hooks=hooks):
                self.runner.final_hidden(x, start, stop=stop)
            if keep is not None:
                kept.append(store[hooks_keep[0]] if hooks_keep else x)
            r = torch.arange(len(pos), device=pos.device)
            for n in names:
                rows[n].append(store[n][r, pos].flatten(1).double())  # heads side by side
        self.kept = (keep, kept) if keep is not None else None
        n_prompts = int(self.owner.max()) + 1
        counts = torch.bincount(self.owner, minlength=n_prompts).unsqueeze(1)
        out = {}
        for n in names:
            per_version = torch.cat(rows[n])[self.pick]
            total = torch.zeros((n_prompts, per_version.shape[1]), dtype=torch.float64,
                                device=per_version.device)
            out[n] = total.index_add_(0, self.owner, per_version) / counts
        return out
