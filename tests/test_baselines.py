"""The baselines LSDM is compared against: FT and CDA fine-tuning (interp.mitigate.finetune).
Tiny random models."""

import pytest
import torch

import interp
from interp import prompts as P
from interp.mitigate.edit import Edit, EditError
from interp.mitigate.finetune import _factor, finetune
from interp.mitigate.project import bias_directions, project, steer
from interp.model.forward import last_token_logprobs
from interp.model.runner import Runner
from reference_trace import last_token_acts


def _pronoun_logprobs(model, ps):
    ids = interp.metrics.Candidates.resolve(model).ids
    lp = last_token_logprobs(model, [p.input_ids for p in ps], progress=False)
    return lp[:, ids["male"]], lp[:, ids["female"]]


@pytest.fixture(scope="module")
def fit_prompts(tiny_llama):
    return P.professions(tiny_llama, "train", templates=P.TEMPLATES[:2])[:16]


def test_a_dense_change_factors_exactly():
    d = torch.randn(12, 20, dtype=torch.float64)
    U, V = _factor(d)
    assert U.shape == (12, 12) and V.shape == (20, 12)
    assert torch.allclose(U.double() @ V.double().T, d, atol=1e-5)


def test_ft_changes_only_its_weights_and_leaves_the_model_as_it_was(tiny, fit_prompts):
    """On Llama's linears and GPT-2's Conv1D (stored transposed), alike."""
    before = {n: p.detach().clone() for n, p in tiny.hf.named_parameters()}
    flags = {n: p.requires_grad for n, p in tiny.hf.named_parameters()}
    edit = finetune(tiny, fit_prompts, layers=[2], attn_layers=[3], steps=5, lr=1e-2,
                    progress=False)
    after = dict(tiny.hf.named_parameters())
    assert all(torch.equal(before[n], p) for n, p in after.items())
    assert flags == {n: p.requires_grad for n, p in after.items()}
    assert edit.layers == [2] and edit.attn_layers == [3]
    assert edit.meta["method"] == "ft" and edit.meta["fingerprint"] == tiny.fingerprint()
    with edit.applied(tiny):
        changed = {n for n, p in tiny.hf.named_parameters() if not torch.equal(before[n], p)}
    mlp, _ = tiny.arch.edit_parameter(tiny.bridge, "mlp", 2)
    attn, _ = tiny.arch.edit_parameter(tiny.bridge, "attn", 3)
    names = {n for n, p in tiny.hf.named_parameters() if p is mlp or p is attn}
    assert changed == names and len(names) == 2


def test_ft_balances_the_pronouns_on_its_prompts(tiny_llama, fit_prompts):
    m, f = _pronoun_logprobs(tiny_llama, fit_prompts)
    edit = finetune(tiny_llama, fit_prompts, layers=[2, 3], steps=40, lr=3e-3, kl_weight=0.0,
                    batch_size=16, progress=False)
    with edit.applied(tiny_llama):
        m2, f2 = _pronoun_logprobs(tiny_llama, fit_prompts)
    before, after = ((f - m) ** 2).mean(), ((f2 - m2) ** 2).mean()
    assert after < 0.2 * before, (before, after)
    assert edit.meta["loss_last"][1] < edit.meta["loss_first"][1]


def test_ft_runs_only_the_trained_blocks_and_sees_the_model_s_own_log_odds(tiny_llama,
                                                                           fit_prompts):
    # Its first loss, over every prompt at once, from streams cached below the trained block
    # equals the squared log-odds of a plain full forward.
    m, f = _pronoun_logprobs(tiny_llama, fit_prompts)
    edit = finetune(tiny_llama, fit_prompts, layers=[3], steps=1, kl_weight=0.0,
                    batch_size=len(fit_prompts), progress=False)
    assert abs(edit.meta["loss_first"][1] - float(((f - m) ** 2).mean())) < 1e-4


def test_ft_balances_each_prompt_on_its_own_slots_pronouns(tiny_llama):
    # object and possessive prompts ("... told", "... lost"): the loss is (log p(her) −
    # log p(him))² and (log p(her) − log p(his))², not he/she
    contexts = P.contexts(tiny_llama, "train")
    for slot, (male, female) in (("object", (" him", " her")), ("possessive", (" his", " her"))):
        ps = interp.PromptSet([p for p in contexts if p.slot == slot][:16])
        words = {"male": male, "female": female}
        ids = interp.metrics.Candidates.resolve(tiny_llama, words).ids
        lp = last_token_logprobs(tiny_llama, [p.input_ids for p in ps], progress=False)
        want = float(((lp[:, ids["female"]] - lp[:, ids["male"]]) ** 2).mean())
        edit = finetune(tiny_llama, ps, layers=[3], steps=1, kl_weight=0.0,
                        batch_size=len(ps), progress=False)
        assert abs(edit.meta["loss_first"][1] - want) < 1e-4, slot


def test_cda_raises_both_pronouns(tiny_llama, fit_prompts):
    m, f = _pronoun_logprobs(tiny_llama, fit_prompts)
    edit = finetune(tiny_llama, fit_prompts, layers=[3], objective="cda", steps=20, lr=3e-3,
                    kl_weight=0.0, batch_size=16, progress=False)
    with edit.applied(tiny_llama):
        m2, f2 = _pronoun_logprobs(tiny_llama, fit_prompts)
    assert edit.meta["method"] == "cda"
    assert (m2 + f2).mean() > (m + f).mean() + 0.5


def test_a_fine_tuned_edit_saves_and_loads(tiny_llama, fit_prompts, tmp_path):
    edit = finetune(tiny_llama, fit_prompts, layers=[1], steps=3, lr=1e-2, progress=False)
    path = edit.save(tmp_path / "ft.safetensors")
    again = Edit.load(path)
    assert torch.allclose(again.delta(1), edit.delta(1))
    assert again.meta["objective"] == "balance"


def test_bad_baseline_arguments_are_clear_errors(tiny_llama, fit_prompts):
    with pytest.raises(EditError, match="objective must be one of"):
        finetune(tiny_llama, fit_prompts, layers=[1], objective="dpo")
    with pytest.raises(EditError, match="no layers to fine-tune"):
        finetune(tiny_llama, fit_prompts, layers=[])


# ---- projection (DAMA-style) and steering ----------------------------------------------------


def test_the_bias_direction_erases_the_covariance_with_the_log_odds(tiny_llama, fit_prompts):
    hook = tiny_llama.arch.hook("mlp", 2)
    (c, r, mean), = bias_directions(tiny_llama, fit_prompts, {"x": hook}, ridge=0.0).values()
    O = last_token_acts(tiny_llama, fit_prompts, hook)
    m, f = _pronoun_logprobs(tiny_llama, fit_prompts)
    y = (f - m).double()
    X = O - O.mean(0)
    want = X.T @ (y - y.mean()) / len(y)
    assert torch.allclose(c.double(), want, atol=1e-5 * float(want.abs().max()) + 1e-7)
    assert torch.allclose(mean.double(), O.mean(0), atol=1e-5)
    assert float(r.double() @ c.double()) == pytest.approx(1.0, abs=1e-4)
    # After the erasure nothing in the outputs covaries with the log-odds any more.
    erased = X - (X @ r.double())[:, None] * c.double()
    cov = erased.T @ (y - y.mean()) / len(y)
    assert cov.abs().max() < 1e-3 * want.abs().max()


def test_a_projection_edit_removes_its_direction_from_the_outputs(tiny_llama, fit_prompts):
    edit = project(tiny_llama, fit_prompts, layers=[2], attn_layers=[1])
    hook = tiny_llama.arch.hook("mlp", 2)
    (_, r, _), = bias_directions(tiny_llama, fit_prompts, {"x": hook}).values()
    before = last_token_acts(tiny_llama, fit_prompts, hook) @ r.double()
    with edit.applied(tiny_llama):
        # the attention projection below changes the MLP's input a little: read its output now
        after = last_token_acts(tiny_llama, fit_prompts, hook) @ r.double()
    assert before.abs().max() > 1e-3
    assert after.abs().max() < 1e-4 * max(1.0, float(before.abs().max()))
    assert edit.meta["method"] == "project" and edit.attn_layers == [1]
    assert edit.updates[2][0].shape[1] == 1  # rank one


def test_steering_equals_ablating_the_stream_by_hand(tiny_llama, fit_prompts):
    layer, strength = 2, 0.7
    s = steer(tiny_llama, fit_prompts, layer=layer, strength=strength)
    ids = torch.tensor([list(fit_prompts[0].input_ids)])
    runner = Runner(tiny_llama)
    store = {}
    with torch.no_grad(), tiny_llama.bridge.hooks(fwd_hooks=[(
            tiny_llama.arch.hook("resid", layer), lambda a, hook: store.update(h=a.clone()))]):
        plain = runner.logits_at(runner.embed(ids), 0, torch.tensor([ids.shape[1] - 1]))
    h = store["h"]
    ablated = h - strength * ((h - s.mean) @ s.reader)[..., None] * s.direction
    with torch.no_grad():
        want = runner.logits_at(ablated, layer, torch.tensor([ids.shape[1] - 1]))
        with s.applied(tiny_llama):
            got = runner.logits_at(runner.embed(ids), 0, torch.tensor([ids.shape[1] - 1]))
        again = runner.logits_at(runner.embed(ids), 0, torch.tensor([ids.shape[1] - 1]))
    assert (got - want).abs().max() < 1e-4
    assert (got - plain).abs().max() > 1e-4
    assert torch.equal(again, plain) and not s.is_applied(tiny_llama)


def test_steering_and_projection_arguments_are_checked(tiny_llama, fit_prompts):
    with pytest.raises(EditError, match="no layers to project"):
        project(tiny_llama, fit_prompts, layers=[])
    s = steer(tiny_llama, fit_prompts, layer=1)
    with s.applied(tiny_llama), pytest.raises(EditError, match="already applied"):
        s.apply(tiny_llama)
    with pytest.raises(EditError, match="not applied"):
        s.revert(tiny_llama)


def test_a_steering_edit_is_refused_by_export(tiny_llama, fit_prompts, tmp_path):
    s = steer(tiny_llama, fit_prompts, layer=1)
    with pytest.raises(interp.InterpError, match="steering edit acts through a hook"):
        interp.export(tiny_llama, tmp_path / "m", "hf", edit=s)
    assert not (tmp_path / "m").exists() and not s.is_applied(tiny_llama)
