
import numpy as np
import pytest
from reference_trace import engine_cells, reference_trace

import interp
from interp import prompts as P
from interp.locate.corruption import Noise, Swap
from interp.locate.groups import token_group
from interp.measure.metrics import Candidates

KINDS_ALL = ("resid", "mlp", "attn", "head")


def mixed_prompts(model):
    # different lengths and a multi-token subject in one call
    return P.from_templates(model, ["The {} said that", "After the meeting, the {} explained that"],
                            ["nurse", "paralegal"])


def assert_matches(result, ref, tol=1e-4):
    got = engine_cells(result)
    assert set(ref) <= set(got)
    diffs = [abs(got[k] - v) for k, v in ref.items()]
    assert max(diffs) <= tol, max(diffs)


@pytest.mark.parametrize("window", [1, 3])
def test_exact_engine_equals_reference_noise(tiny, window):
    ps = mixed_prompts(tiny)
    result = interp.trace(tiny, ps, kinds=KINDS_ALL, samples=2, window=window, seed=5,
                          batch_size=37)
    ref, clean, corrupt = reference_trace(tiny, ps, Noise(samples=2), Candidates.resolve(tiny),
                                          kinds=KINDS_ALL, window=window, seed=5)
    assert len(ref) == len(result.frame)
    assert_matches(result, ref)
    assert np.allclose(result.prompts["clean"], clean, atol=1e-4)
    assert np.allclose(result.prompts["corrupt"], corrupt, atol=1e-4)


@pytest.mark.smoke
def test_exact_engine_equals_reference_swap(tiny):
    ps = P.from_templates(tiny, ["The {} said that", "Yesterday the {} announced that"],
                          ["nurse", "carpenter"])
    result = interp.trace(tiny, ps, kinds=KINDS_ALL, corruption="swap", window=2,
                          natural_effects=True)
    c = Candidates.resolve(tiny)
    ref, clean, corrupt = reference_trace(tiny, ps, Swap(), c, kinds=KINDS_ALL, window=2)
    assert_matches(result, ref)
    # Vig et al.: NDE = patched − clean; NIE from the reversed patching
    rev, _, _ = reference_trace(tiny, ps, Swap(), c, kinds=KINDS_ALL, window=2, reverse=True)
    f = result.frame
    got_nie = {k: n for k, n in zip(engine_cells(result), f["nie"])}
    for k, v in rev.items():
        assert abs(got_nie[k] - (v - clean[k[0]])) <= 1e-4
    assert np.allclose(f["nde"], f["patched"] - f["clean"])


def test_swap_with_given_counterfactuals(tiny_llama):
    ps = P.from_records(tiny_llama, [
        {"text": "The nurse said that", "subject": "nurse", "corrupt_text": "The man said that"}])
    result = interp.trace(tiny_llama, ps, kinds=("mlp",), corruption="swap")
    assert result.prompts.loc[0, "corrupt_text"] == "The man said that"
    ref, _, _ = reference_trace(tiny_llama, ps, Swap(), Candidates.resolve(tiny_llama),
                                kinds=("mlp",))
    assert_matches(result, ref)


def test_custom_corruption_callable(tiny_llama):
    ps = P.from_templates(tiny_llama, ["The {} said that"], ["nurse"])
    result = interp.trace(tiny_llama, ps, kinds=("resid",),
                          corruption=lambda model, p: p.text.replace("nurse", "woman"))
    ref, _, _ = reference_trace(tiny_llama, ps, Swap(("woman",)),
                                Candidates.resolve(tiny_llama), kinds=("resid",))
    assert_matches(result, ref)


def test_noise_is_seeded(tiny_llama):
    ps = mixed_prompts(tiny_llama)
    a = interp.trace(tiny_llama, ps, kinds=("mlp",), seed=1)
    b = interp.trace(tiny_llama, ps, kinds=("mlp",), seed=1, batch_size=7)
    c = interp.trace(tiny_llama, ps, kinds=("mlp",), seed=2)
    assert np.allclose(a.frame["patched"], b.frame["patched"], atol=1e-6)
    assert not np.allclose(a.frame["corrupt"], c.frame["corrupt"])
    # a prompt's noise does not depend on the other prompts in the call
    alone = interp.trace(tiny_llama, ps[1:2], kinds=("mlp",), seed=1)
    assert np.allclose(alone.frame["patched"], a.frame[a.frame.prompt_id == 1]["patched"],
                       atol=1e-6)


def test_frame_columns_and_token_groups(tiny_llama):
    ps = mixed_prompts(tiny_llama)
    r = interp.trace(tiny_llama, ps, kinds=("resid", "head"))
    f = r.to_frame()
    for col in ("prompt_id", "text", "kind", "layer", "position", "head", "token",
                "token_group", "clean", "corrupt", "patched", "effect"):
        assert col in f.columns
    assert f.loc[f.kind == "resid", "head"].isna().all()
    assert f.loc[f.kind == "head", "head"].notna().all()
    p = ps[2]  # "The paralegal said that": The | par ale gal | said | that
    groups = [token_group(i, p.subject_span, len(p.input_ids)) for i in range(len(p.input_ids))]
    assert groups == ["before subject", "first subject token", "middle subject tokens",
                      "last subject token", "first following token", "last token"]
    # cells before the subject are exactly unaffected by restoration
    assert (f.loc[f.token_group == "before subject", "effect"] == 0).all()


def test_attribution_approximates_exact(tiny_llama):
    ps = mixed_prompts(tiny_llama)
    exact = interp.trace(tiny_llama, ps, kinds=KINDS_ALL, seed=3)
    approx = interp.trace(tiny_llama, ps, kinds=KINDS_ALL, seed=3, method="attribution")
    assert approx.spec["method"] == "attribution" and "approximation" in repr(approx)
    assert np.allclose(approx.prompts["corrupt"], exact.prompts["corrupt"], atol=1e-5)
    live = exact.frame["effect"] != 0
    rho = np.corrcoef(exact.frame.loc[live, "effect"], approx.frame.loc[live, "effect"])[0, 1]
    assert rho > 0.8


def test_result_views_save_load_and_compare(tmp_path, tiny_llama):
    ps = mixed_prompts(tiny_llama)
    r = interp.trace(tiny_llama, ps, kinds=("resid", "mlp", "attn", "head"), window=3)
    g = r.grouped()
    assert {"kind", "layer", "token_group", "effect", "ci_lo", "ci_hi", "n"} <= set(g)
    assert (g["ci_lo"] <= g["effect"] + 1e-12).all()
    top = r.top_sites(3)
    assert list(top["effect"]) == sorted(top["effect"], reverse=True)
    band = r.suggest_layers("mlp", width=2)
    profile = r.layer_profile("mlp")
    sums = [profile[i] + profile[i + 1] for i in range(len(profile) - 1)]
    assert band == [int(np.argmax(sums)), int(np.argmax(sums)) + 1]
    r.save(tmp_path / "t")
    again = interp.TraceResult.load(tmp_path / "t")
    assert again.spec == r.spec
    assert np.allclose(again.frame["effect"], r.frame["effect"])
    assert again.frame["head"].isna().sum() == r.frame["head"].isna().sum()
    same = r.compare(again).to_frame()
    assert np.allclose(same["difference"].fillna(0), 0)
    figs = [r.plot(), r.plot(prompt_id=2), r.compare(again).plot()]
    assert len(figs[0].data) == 4 and len(figs[1].data) == 4
    rerun = interp.trace(tiny_llama, ps, spec=r.spec)
    assert np.allclose(rerun.frame["patched"], r.frame["patched"], atol=1e-6)


def test_jsonl_prompts(tmp_path, tiny_llama):
    path = tmp_path / "p.jsonl"
    path.write_text('{"text": "The nurse said that", "subject": "nurse", '
                    '"corrupt_text": "The woman said that"}\n')
    r = interp.trace(tiny_llama, path, kinds=("mlp",), corruption="swap")
    assert len(r.prompts) == 1 and r.prompts.loc[0, "corrupt_text"] == "The woman said that"


def test_bad_input_is_a_clear_error(tiny_llama):
    ps = P.from_templates(tiny_llama, ["The {} said that"], ["paralegal"])
    with pytest.raises(interp.TokenizationError, match="no swap word has the token length"):
        interp.trace(tiny_llama, ps, corruption="swap")
    with pytest.raises(interp.InterpError, match="unknown kind 'mlps'"):
        interp.trace(tiny_llama, ps, kinds=("mlps",))
    with pytest.raises(interp.InterpError, match="window 9 does not fit the model"):
        interp.trace(tiny_llama, ps, window=9)
    bad = P.from_records(tiny_llama, [{"text": "The nurse said that", "subject": "nurse"}])
    broken = bad[0].__class__(**{**bad[0].__dict__, "subject": "doctor"})
    with pytest.raises(interp.InterpError, match="'doctor' is not in the prompt"):
        interp.trace(tiny_llama, interp.PromptSet([broken]))
    with pytest.raises(interp.TokenizationError, match="tokens but its prompt"):
        interp.trace(tiny_llama, P.from_records(tiny_llama, [
            {"text": "The nurse said that", "subject": "nurse",
             "corrupt_text": "The young woman said that"}]), corruption="swap")
    with pytest.raises(interp.EmptyPromptSetError):
        interp.trace(tiny_llama, interp.PromptSet([]))
    with pytest.raises(interp.InterpError, match="natural_effects needs corruption='swap'"):
        interp.trace(tiny_llama, ps, natural_effects=True)


@pytest.mark.parametrize("batch_size", [1, 5, None])
def test_every_schedule_equals_reference_and_counts_its_cost(tiny_llama, batch_size):
    # Runs join a forward at their own start layer, so however the runs are cut into forwards
    # (one per run, five runs, the token budget), prompts of one length execute exactly the
    # grid's floor; prompts of different lengths share forwards padded to the longest.
    ps = P.from_templates(tiny_llama, ["The {} said that"], ["nurse", "carpenter", "teacher"])
    lengths = [len(p.input_ids) for p in ps]
    ps = ps.filter(lambda p: len(p.input_ids) == lengths[0])
    assert len(ps) >= 2
    kinds = ("resid", "mlp", "attn", "head")
    result = interp.trace(tiny_llama, ps, kinds=kinds, samples=2, seed=3, batch_size=batch_size)
    ref, _, _ = reference_trace(tiny_llama, ps, Noise(samples=2), Candidates.resolve(tiny_llama),
                                kinds=kinds, seed=3)
    assert_matches(result, ref)
    cost = result.cost
    assert cost["executed_block_tokens"] == cost["floor_block_tokens"]
    assert 0 <= cost["setup_s"] <= cost["total_s"]
    mixed = P.from_templates(tiny_llama, ["The {} said that", "Yesterday the {} said that"],
                             ["nurse"])
    cost = interp.trace(tiny_llama, mixed, kinds=kinds, batch_size=batch_size).cost
    assert cost["executed_block_tokens"] >= cost["floor_block_tokens"]
