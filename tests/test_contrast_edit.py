"""Editing for a contrast: the targets balance its groups or follow the declared one, the edit
reaches them, the fitted prompts move, and the gender contrast is the he/she edit itself."""

import numpy as np
import pandas as pd
import pytest
import torch

import interp
from interp.locate.atlas import Atlas
from interp.measure import prompts as P
from interp.measure.contrast import contrast
from interp.mitigate.edit import EditError
from interp.mitigate.project import bias_directions, project, steer
from reference_trace import last_token_acts

FIT = dict(layers=[1, 2], attn_layers=[2], lam=0.1, iters=4, stats_tokens=1500, strict=False,
           progress=False)


def test_an_edit_follows_the_declared_group(tiny_llama):
    c = contrast("misgendering")
    ps = c.prompts(tiny_llama, "train").filter(lambda p: p.declared in ("xe", "they", "he"))[:9]
    edit = interp.lsdm(tiny_llama, ps, contrast=c, clamp_norm=0.05, **FIT)
    assert edit.meta["contrast"] == "misgendering"
    reached = edit.meta["targets_reached"]
    assert reached["miss"] < 0.05 and abs(reached["along"] - 1) < 0.05
    lean = edit.meta["fitted_prompts"]["lean"]
    assert lean["after"] > lean["before"]
    assert edit.meta["targets"]["abs_residual_after"] < edit.meta["targets"][
        "abs_residual_before"]


def test_an_edit_balances_a_contrasts_groups(tiny_llama):
    edit = interp.lsdm(tiny_llama, contrast="religion", tol=0.005, **FIT)
    assert edit.meta["n_prompts"] == len(contrast("religion").prompts(tiny_llama, "train"))
    moved = edit.meta["fitted_prompts"]["abs_lean"]
    assert moved["after"] < 0.5 * moved["before"]


def test_the_gender_contrast_is_the_he_she_edit(tiny_llama):
    ps = P.from_templates(tiny_llama, ["The {} said that"], ["nurse", "carpenter", "teacher"])
    plain = interp.lsdm(tiny_llama, ps, preserve=None, **FIT)
    gender = interp.lsdm(tiny_llama, ps, contrast="gender", preserve=None, **FIT)
    assert "contrast" not in gender.meta
    for mine, theirs in ((plain.updates, gender.updates), (plain.attn, gender.attn)):
        assert mine.keys() == theirs.keys()
        for layer, (u, v) in mine.items():
            assert torch.equal(u, theirs[layer][0]) and torch.equal(v, theirs[layer][1])


def test_an_atlas_traces_each_contrast_with_one_spec(tiny_llama, tmp_path):
    a = interp.atlas(tiny_llama, ["gender", "religion"], prompts=3, samples=1)
    assert list(a.traces) == ["gender", "religion"]
    s = a.summary()
    assert {"mlp_peak_layer", "attn_share_top_third"} <= set(s.columns)
    assert (s["prompts"] == 3).all()
    frame = a.to_frame()
    assert set(frame["contrast"]) == {"gender", "religion"} and set(frame["kind"]) == {"mlp",
                                                                                      "attn"}
    assert len(a.plot().data) == 4
    again = Atlas.load(a.save(tmp_path / "atlas"))
    assert np.allclose(again.summary().to_numpy(float), s.to_numpy(float))
    with pytest.raises(interp.InterpError, match="unknown contrast"):
        interp.atlas(tiny_llama, ["astrology"])


def test_a_gender_edit_can_keep_what_follows_a_declared_pronoun(tiny_llama):
    from interp.mitigate.lean import contrast_logprobs
    from interp.mitigate.lsdm import declared_prompts

    c = contrast("misgendering")
    kept = declared_prompts(tiny_llama)
    assert {p.declared for p in kept} == {"he", "she"} and {p.split for p in kept} == {"train"}
    held = kept[::7]  # the constraint's own prompts: on a random model nothing carries over
    ps = P.from_templates(tiny_llama, ["The {} said that", "The {} smiled because"],
                          ["nurse", "carpenter", "teacher", "pilot"])
    before = contrast_logprobs(tiny_llama, c, held)
    moved, edits = {}, {}
    # declared_weight weighs the kept declared prompts alone: at 0 they count for nothing, at
    # preserve_weight (0.1) as much as without it
    for keep, weight in ((False, None), (True, None), (True, 0.0), (True, 0.1)):
        edit = interp.lsdm(tiny_llama, ps, keep_declared=keep, declared_weight=weight,
                           **{**FIT, "tol": 0.001})
        assert (edit.meta["preserve"]["n_prompts"] > len(kept)) == keep
        with edit.applied(tiny_llama):
            moved[keep, weight] = np.abs(contrast_logprobs(tiny_llama, c, held) - before).mean()
        edits[keep, weight] = edit
    assert moved[True, None] < moved[False, None]
    for layer in (1, 2):
        for same, like in (((True, 0.0), (False, None)), ((True, 0.1), (True, None))):
            assert torch.allclose(edits[same].delta(layer), edits[like].delta(layer),
                                  atol=1e-3 * float(edits[like].delta(layer).abs().max()))


def test_a_gender_edit_can_follow_a_declared_pronoun(tiny_llama):
    """follow_declared fits the he/she-declared prompts with targets that make the declared
    pronoun the likeliest: after the edit it is, where the plain edit leaves it as it was."""
    from interp.mitigate.lean import contrast_logprobs
    from interp.mitigate.lsdm import declared_prompts

    c = contrast("misgendering")
    declared = declared_prompts(tiny_llama)[::4]
    own = np.array([c.group_names.index(p.declared) for p in declared])
    ps = P.from_templates(tiny_llama, ["The {} said that", "The {} smiled because"],
                          ["nurse", "carpenter", "teacher", "pilot"])

    def followed():
        return (contrast_logprobs(tiny_llama, c, declared).argmax(1) == own).mean()

    unedited = followed()
    share = {}
    for follow in (False, True):
        edit = interp.lsdm(tiny_llama, ps, follow_declared=follow, **FIT)
        assert ("follow_declared" in edit.meta) == follow
        with edit.applied(tiny_llama):
            share[follow] = followed()
    assert unedited < 0.5 and abs(share[False] - unedited) < 0.15
    assert share[True] > 0.9
    report = edit.meta["targets"]["declared"]
    assert report["abs_residual_after"] < report["abs_residual_before"]


@pytest.mark.parametrize("name,objective", [("religion", "balance"), ("misgendering", "balance")])
def test_a_fine_tune_takes_a_contrast(tiny_llama, name, objective):
    """FT's loss on a contrast is its lean (balance) or the declared group's shortfall
    (follow), read on multi-token forms: the fitted prompts move the way the goal asks."""
    from interp.mitigate.finetune import finetune
    from interp.mitigate.lean import contrast_logprobs, lean_measures

    c = contrast(name)
    ps = c.prompts(tiny_llama, "train")[:24]
    before = lean_measures(c, contrast_logprobs(tiny_llama, c, ps), ps)
    edit = finetune(tiny_llama, ps, layers=[2, 3], attn_layers=[3], objective=objective,
                    contrast=c, steps=25, lr=1e-3, kl_weight=0.0, progress=False)
    assert edit.meta["contrast"] == name and edit.meta["loss_last"][-1] < edit.meta[
        "loss_first"][-1]
    with edit.applied(tiny_llama):
        after = lean_measures(c, contrast_logprobs(tiny_llama, c, ps), ps)
    if c.goal == "balance":
        assert after["abs_lean"] < 0.5 * before["abs_lean"]
    else:
        assert after["lean"] > before["lean"] and after["missed"] < before["missed"]
    with pytest.raises(interp.InterpError, match="does not ask"):
        finetune(tiny_llama, ps, layers=[2], objective="cda", contrast="misgendering")


@pytest.mark.parametrize("name", ["religion", "race"])
def test_a_projection_erases_a_contrasts_groups(tiny_llama, name):
    """LEACE with a k − 1 dimensional concept: after the erasure nothing at the site covaries
    with any group's log-probability against the first's, and the weight edit has rank k − 1."""
    c = contrast(name)
    ps = c.prompts(tiny_llama, "train")[:60]
    hook = tiny_llama.arch.hook("mlp", 2)
    (C, R, mean), = bias_directions(tiny_llama, ps, {"x": hook}, ridge=0.0,
                                    contrast=c).values()
    k = len(c.group_names)
    assert C.shape[1] == R.shape[1] == k - 1
    assert torch.allclose(R.double().T @ C.double(), torch.eye(k - 1, dtype=torch.float64),
                          atol=1e-3)
    items = [{"text": p.text, "slot": p.slot, "group": p.group} for p in ps]
    lp = torch.tensor(c.logprobs(tiny_llama, pd.DataFrame(items), progress=False)[
        list(c.group_names)].to_numpy())
    Y = lp[:, 1:] - lp[:, :1]
    O = last_token_acts(tiny_llama, ps, hook)
    X = O - O.mean(0)
    want = X.T @ (Y - Y.mean(0)) / len(Y)
    assert torch.allclose(C.double(), want, atol=1e-4 * float(want.abs().max()) + 1e-7)
    erased = X - (X @ R.double()) @ C.double().T
    assert (erased.T @ (Y - Y.mean(0)) / len(Y)).abs().max() < 1e-3 * want.abs().max()

    edit = project(tiny_llama, layers=[2], contrast=c)
    assert edit.meta["contrast"] == name and edit.updates[2][0].shape[1] == k - 1
    (_, R_fit, _), = bias_directions(tiny_llama, c.prompts(tiny_llama, "train"), {"x": hook},
                                     contrast=c).values()
    before = last_token_acts(tiny_llama, ps, hook) @ R_fit.double()
    with edit.applied(tiny_llama):
        after = last_token_acts(tiny_llama, ps, hook) @ R_fit.double()
    assert before.abs().max() > 1e-3
    assert after.abs().max() < 1e-4 * max(1.0, float(before.abs().max()))


def test_a_projection_refuses_to_follow_a_declared_group(tiny_llama):
    with pytest.raises(EditError, match="cannot follow the declared group"):
        project(tiny_llama, layers=[2], contrast="misgendering")
    with pytest.raises(EditError, match="cannot follow the declared group"):
        steer(tiny_llama, layer=1, contrast="misgendering")
    s = steer(tiny_llama, layer=1, contrast="religion")
    ids = torch.tensor([list(contrast("religion").prompts(tiny_llama, "test")[0].input_ids)])
    with torch.no_grad():
        plain = tiny_llama.hf(ids).logits
        with s.applied(tiny_llama):
            steered = tiny_llama.hf(ids).logits
    assert s.direction.shape[1] == 2 and (steered - plain).abs().max() > 1e-4
