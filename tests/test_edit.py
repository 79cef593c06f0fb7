import pytest
import torch

import interp
from interp import prompts as P
from interp.mitigate.edit import Edit, EditError
from interp.mitigate.lsdm import lsdm
from interp.mitigate.solve import solve_update


def random_problem(d_in=48, d_out=16, n=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    K = torch.randn(d_in, n, generator=g, dtype=torch.float64)
    R = torch.randn(d_out, n, generator=g, dtype=torch.float64)
    A = torch.randn(d_in, d_in, generator=g, dtype=torch.float64)
    C = A @ A.T / d_in + 0.1 * torch.eye(d_in, dtype=torch.float64)
    return K, R, C


def test_solve_maps_every_key_to_its_target():
    K, R, C = random_problem()
    U, V = solve_update(K, R, C, lam=1e-6)
    delta = U @ V.T
    assert (delta @ K - R).abs().max() <= 1e-4


def test_solve_leaves_keys_orthogonal_to_the_edit_unchanged():
    K, R, _ = random_problem()
    eye = torch.eye(K.shape[0], dtype=torch.float64)
    q, _ = torch.linalg.qr(torch.cat([K, torch.randn(K.shape[0], 3, dtype=torch.float64)], 1))
    orthogonal = q[:, K.shape[1]:]  # orthonormal, and orthogonal to every key
    for lam in (1e-3, 1.0, 1e3):
        U, V = solve_update(K, R, eye, lam)
        assert (U @ V.T @ orthogonal).abs().max() <= 1e-10


def test_preserved_keys_change_less_as_lambda_grows():
    K, R, C = random_problem()
    g = torch.Generator().manual_seed(1)
    preserved = torch.linalg.cholesky(C) @ torch.randn(C.shape[0], 200, generator=g,
                                                        dtype=torch.float64)
    changes = []
    for lam in (0.01, 1.0, 100.0, 1e4):
        U, V = solve_update(K, R, C, lam)
        changes.append(float((U @ V.T @ preserved).norm()))
    assert changes == sorted(changes, reverse=True) and changes[-1] < 0.05 * changes[0]


def test_single_layer_single_prompt_is_rank_one():
    K, R, C = random_problem(n=1)
    U, V = solve_update(K, R, C, lam=1.0)
    assert torch.linalg.matrix_rank(U @ V.T) == 1


def test_ill_conditioned_statistics_are_a_clear_error():
    K, R, C = random_problem()
    with pytest.raises(EditError, match="ill-conditioned.*raise λ"):
        solve_update(K, R, torch.zeros_like(C), lam=1.0)


@pytest.fixture(scope="module")
def tiny_edit(tiny_llama):
    ps = P.professions(tiny_llama, "train", templates=P.TEMPLATES[:2])[:12]
    edit = lsdm(tiny_llama, ps, layers=[0, 1], site="subject", n_prefixes=2, prefix_len=4,
                iters=6, stats_tokens=1500, strict=False, progress=False)
    return edit, ps


@pytest.mark.smoke
def test_lsdm_returns_an_unapplied_low_rank_edit(tiny_llama, tiny_edit):
    edit, ps = tiny_edit
    assert edit.layers == [0, 1]
    assert edit.meta["fingerprint"] == tiny_llama.fingerprint()  # the model is left as it was
    n_subjects = len(ps.subjects())  # one key and one target per subject
    assert n_subjects < len(ps)
    for layer in edit.layers:
        U, V = edit.updates[layer]
        assert U.shape == (tiny_llama.arch.d_model, n_subjects)
        assert V.shape == (tiny_llama.arch.d_mlp, n_subjects)


@pytest.mark.smoke
def test_apply_and_revert_are_bit_exact(tiny_llama, tiny_edit):
    edit, _ = tiny_edit
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    fp = tiny_llama.fingerprint()
    with edit.applied(tiny_llama):
        assert tiny_llama.fingerprint() != fp
        w = tiny_llama.arch.mlp_down_weight(tiny_llama.bridge, 1)
        assert torch.allclose(w.double() - before[_down_name(tiny_llama, 1)].double(),
                              edit.delta(1), atol=1e-5)
        with pytest.raises(EditError, match="already applied"):
            edit.apply(tiny_llama)
    assert tiny_llama.fingerprint() == fp
    for k, v in tiny_llama.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(EditError, match="not applied"):
        edit.revert(tiny_llama)


def _down_name(model, layer):
    return f"model.layers.{layer}.mlp.down_proj.weight"


def test_edit_refuses_another_model(tiny_edit):
    edit, _ = tiny_edit
    other = interp.load_model("tiny-llama", seed=7)
    with pytest.raises(EditError, match="fitted on a model with fingerprint"):
        edit.apply(other)


def test_save_load_gives_an_identical_edit(tmp_path, tiny_edit):
    edit, _ = tiny_edit
    path = edit.save(tmp_path / "e.lsdm")
    again = Edit.load(path)
    assert again.meta == edit.meta and again.layers == edit.layers
    for layer in edit.layers:
        assert torch.equal(again.delta(layer), edit.delta(layer))
    assert [p.name for p in tmp_path.iterdir()] == ["e.lsdm"]


def test_an_edit_file_stores_each_update_in_its_smaller_exact_form(tmp_path, tiny_llama):
    from safetensors import safe_open

    g = torch.Generator().manual_seed(0)
    d, k = tiny_llama.arch.d_model, tiny_llama.arch.d_mlp
    low = (torch.randn(d, 2, generator=g), torch.randn(k, 2, generator=g))  # rank 2: factors
    high = (torch.randn(d, 200, generator=g), torch.randn(k, 200, generator=g))  # dense smaller
    edit = Edit({0: low, 1: high}, {"fingerprint": tiny_llama.fingerprint()})
    path = edit.save(tmp_path / "e.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert sorted(f.keys()) == ["layer0.U", "layer0.V", "layer1.D"]
    assert path.stat().st_size < (d + k) * 200 * 4  # below the factors' bytes alone
    again = Edit.load(path)
    for layer in (0, 1):
        assert torch.equal(again.delta(layer), edit.delta(layer))
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    with edit.applied(tiny_llama):
        by_factors = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    with again.applied(tiny_llama):  # the dense form changes the weights bit for bit alike
        assert all(torch.equal(v, by_factors[k]) for k, v in tiny_llama.state_dict().items())
    assert all(torch.equal(v, before[k]) for k, v in tiny_llama.state_dict().items())
    assert Edit.load(again.save(tmp_path / "again.safetensors")).delta(1).equal(edit.delta(1))


def test_bad_edit_input_is_a_clear_error(tiny_llama):
    ps = P.professions(tiny_llama, "train", templates=P.TEMPLATES[:1])[:2]
    with pytest.raises(EditError, match="layer 9 is outside the model"):
        lsdm(tiny_llama, ps, layers=[9])
    with pytest.raises(interp.EmptyPromptSetError):
        lsdm(tiny_llama, interp.PromptSet([]), layers=[0])
    with pytest.raises(EditError, match="did not converge"):
        lsdm(tiny_llama, ps, layers=[0], site="subject", n_prefixes=0, iters=1, tol=1e-6,
             stats_tokens=500)


def test_condition_estimate_is_close_to_the_eigenvalue_ratio():
    from interp.mitigate.solve import condition_number

    g = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(64, 64, generator=g, dtype=torch.float64))
    eig = torch.logspace(-3, 3, 64, dtype=torch.float64)
    A = q @ torch.diag(eig) @ q.T
    estimate = condition_number(A, torch.linalg.cholesky(A))
    assert 0.9e6 <= estimate <= 1.0e6 * (1 + 1e-9)


def test_fitted_prompt_bias_in_the_provenance_is_what_the_model_shows(tiny_llama, tiny_edit):
    edit, ps = tiny_edit
    frame = interp.bias(tiny_llama, ps, progress=False).frame
    with edit.applied(tiny_llama):
        edited = interp.bias(tiny_llama, ps, progress=False).frame
    recorded = edit.meta["fitted_prompts"]
    assert recorded["abs_logodds"]["before"] == pytest.approx(frame.logodds.abs().mean(), abs=1e-4)
    assert recorded["abs_logodds"]["after"] == pytest.approx(edited.logodds.abs().mean(), abs=1e-4)
    assert recorded["abs_gap"]["after"] == pytest.approx(edited.abs_gap.mean(), abs=1e-5)
    assert set(edit.meta["seconds"]) == {"prefixes", "statistics", "targets", "solve", "measure"}


def _versions(model):
    from interp.mitigate.keys import versions

    ps = P.professions(model, "train", templates=interp.EDIT_TEMPLATES)[:18]
    return versions(model, ps, ["It was a long day", "Yes"])


@pytest.mark.smoke
def test_resumed_downstream_run_equals_a_plain_forward(tiny):
    from interp.mitigate.targets import Downstream
    from interp.model.forward import last_token_logprobs

    v = _versions(tiny)
    down = Downstream(tiny, v, layer=1, chunk=5)
    plain = last_token_logprobs(tiny, v.ids, progress=False)
    got = torch.empty_like(plain)
    with torch.no_grad():
        for g, logits in down.logits(torch.zeros(len(v.ids), tiny.arch.d_model)):
            got[g] = logits.log_softmax(-1)
    assert (got - plain).abs().max() < 1e-4


@pytest.mark.smoke
def test_subject_reader_equals_reading_each_version_alone(tiny):
    from interp.mitigate.keys import SubjectReader
    from interp.model.runner import Runner, capture

    v = _versions(tiny)
    name = tiny.arch.hook("mlp_key", 1)
    reader = SubjectReader(tiny, v, batch_size=7)
    first = reader.read([name], stop=2, keep=1)[name]
    resumed = reader.read([name], start=1, stop=2)[name]  # from the stream kept at layer 1
    runner, rows = Runner(tiny), []
    for ids, last in zip(v.ids, v.subject_last):
        store, hooks = capture([name])
        with torch.no_grad(), tiny.bridge.hooks(fwd_hooks=hooks):
            runner.final_hidden(runner.embed(torch.tensor([ids])), 0)
        rows.append(store[name][0, last].double())
    owner = torch.tensor(v.prompt)
    plain = torch.stack([torch.stack(rows)[owner == s].mean(0) for s in range(len(v.subjects))])
    assert (first - plain).abs().max() < 1e-5 and (resumed - plain).abs().max() < 1e-5


def test_versions_find_the_subject_where_its_template_put_it(tiny_llama):
    # "man" also starts inside "manager", earlier in the text: the key is still read at the
    # filled-in word, bare and behind a prefix (it used to be looked up by its first
    # occurrence, which left the subject without a version and its keys NaN)
    from interp.mitigate.keys import SubjectReader, versions

    ps = P.from_templates(tiny_llama, ["The manager told the {} that"], ["man", "woman"])
    v = versions(tiny_llama, ps, ["It was a long day"])
    assert len(v.ids) == 4 and v.prompt == [0, 0, 1, 1]
    for ids, last, owner in zip(v.ids, v.subject_last, v.prompt):
        p = ps[owner]
        assert ids[last] == p.input_ids[p.subject_span[1] - 1]
        assert ids[last + 1:] == list(p.input_ids[p.subject_span[1]:])
    name = tiny_llama.arch.hook("mlp_key", 0)
    assert torch.isfinite(SubjectReader(tiny_llama, v).read([name])[name]).all()


def test_last_token_versions_have_one_key_each(tiny_llama):
    from interp.mitigate.keys import versions

    ps = P.professions(tiny_llama, "train", templates=interp.EDIT_TEMPLATES)[:6]
    v = versions(tiny_llama, ps, ["It was a long day"], site="last")
    assert v.subject_last == [len(ids) - 1 for ids in v.ids]
    assert v.prompt == list(range(len(v.ids))) and len(v.subjects) == len(v.ids)
    assert sorted(v.context) == [0] * len(ps) + [1] * len(ps)
    with pytest.raises(EditError, match="site must be one of"):
        versions(tiny_llama, ps, [], site="middle")


def _last_token_logprobs(model, ps):
    from interp.model.forward import last_token_logprobs

    return last_token_logprobs(model, [p.input_ids for p in ps], progress=False)


@pytest.mark.smoke
def test_last_token_edit_balances_its_prompts_and_keeps_the_preserved_ones(tiny_llama):
    ps = P.professions(tiny_llama, "train", templates=P.TEMPLATES[:3])[:8]
    keep = P.definitional(tiny_llama, templates=P.TEMPLATES[:3], split="train")[:8]
    top = tiny_llama.arch.n_layers - 1
    # A random model is barely biased: a tight tolerance makes the targets move.
    kw = dict(layers=[top], site="last", n_prefixes=0, lam=1e-4, tol=1e-3, stats_tokens=1500,
              progress=False)
    ids = interp.metrics.Candidates.resolve(tiny_llama).ids
    pair = [ids["male"], ids["female"]]
    base_keep = _last_token_logprobs(tiny_llama, keep)
    for weight, most in ((1.0, 1e-3), (0.0, None)):
        edit = lsdm(tiny_llama, ps, preserve=keep if weight else None, preserve_weight=weight,
                    **kw)
        n_keys = len(ps) + (len(keep) if weight else 0)
        assert edit.updates[top][0].shape == (tiny_llama.arch.d_model, n_keys)
        with edit.applied(tiny_llama):
            lp = _last_token_logprobs(tiny_llama, ps)
            moved = (_last_token_logprobs(tiny_llama, keep) - base_keep).abs().max()
        # Each key maps to its own target at the top layer, so the edited model shows the
        # log-odds the targets reached (under the tolerance).
        reached = (lp[:, pair[1]] - lp[:, pair[0]]).abs().mean()
        assert float(reached) == pytest.approx(edit.meta["targets"]["abs_logodds_after"],
                                               abs=1e-3)
        assert reached < 1e-3
        if most is not None:
            assert moved < most
        else:
            assert moved > 1e-2  # without preserving them, the edit does move them
    assert edit.meta["site"] == "last" and edit.meta["preserve"] is None


def test_sampled_corpus_is_seeded_and_no_longer_than_needed(tiny_llama):
    from interp.mitigate.stats import corpus_tokens, key_second_moments, sample_text

    a = sample_text(tiny_llama, 300, seed=3, length=16, batch_size=8)
    assert a == sample_text(tiny_llama, 300, seed=3, length=16, batch_size=8)
    assert a != sample_text(tiny_llama, 300, seed=4, length=16, batch_size=8)
    # 18 rows of 17 tokens: two full batches and a last one of two rows, not eight.
    assert len(a) == 18 and {len(r) for r in a} == {17}
    seqs, _ = corpus_tokens(tiny_llama, None, 5000)
    assert sum(map(len, seqs)) == 5000
    # C = E[k kᵀ] over every corpus token, computed here with one plain hooked forward each.
    layer = 1
    C = key_second_moments(tiny_llama, [layer], n_tokens=5000, use_cache=False)[layer]
    total = torch.zeros_like(C)
    hook = tiny_llama.arch.hook("mlp_key", layer)
    for s in seqs:
        _, cache = tiny_llama.bridge.run_with_cache(torch.tensor([s]), names_filter=hook)
        k = cache[hook][0].double()
        total += k.T @ k
    assert torch.allclose(C, total / 5000, rtol=1e-6, atol=1e-9)


def test_the_default_lsdm_is_the_best_recipe(tiny_llama):
    # Last token, the sites a trace chooses (top MLPs and their strongest attention), the
    # train-split definitional prompts preserved at weight 0.1, bare prompts.
    ps = P.professions(tiny_llama, "train", templates=P.TEMPLATES[:1])[:6]
    edit = lsdm(tiny_llama, ps, stats_tokens=1000, strict=False, progress=False)
    n = tiny_llama.arch.n_layers
    assert edit.meta["site"] == "last" and edit.meta["n_prefixes"] == 0
    assert edit.layers == list(range(max(0, n - 6), n)) and len(edit.attn_layers) == 2
    assert set(edit.attn_layers) <= set(edit.layers)
    assert "strongest effect" in edit.meta["sites_chosen"]
    assert edit.meta["preserve"]["weight"] == 0.1
    assert edit.meta["preserve"]["subjects"] == P.definitional(tiny_llama, split="train").subjects()
    paper = lsdm(tiny_llama, ps, layers=[0], site="subject", stats_tokens=1000, strict=False,
                 progress=False)
    assert paper.meta["preserve"] is None and paper.meta["n_prefixes"] == 1
    with pytest.raises(EditError, match="preserve must be a PromptSet, None or 'auto'"):
        lsdm(tiny_llama, ps, layers=[0], preserve="definitional")


def test_each_prompt_is_balanced_on_its_own_pronoun_pair(tiny_llama):
    # Object and possessive contexts ("The writer brushed" → his/her) are balanced on him/her
    # and his/her, subject contexts on he/she: every key maps to its own target.
    templates = ["The {} said that", "The {} brushed", "The {} was sick, so the team sent"]
    slots = {t: P.CONTEXT_TEMPLATES.get(t, "subject") for t in templates}
    ps = P.professions(tiny_llama, "train", templates=templates, slots=slots)[:9]
    assert [p.slot for p in ps[:3]] == ["subject", "possessive", "object"]
    top = tiny_llama.arch.n_layers - 1
    edit = lsdm(tiny_llama, ps, layers=[top], site="last", n_prefixes=0, lam=1e-4, tol=1e-3,
                stats_tokens=1500, preserve=None, progress=False)
    pairs = {s: [tiny_llama.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in ws]
             for s, ws in interp.metrics.SLOT_PRONOUNS.items()}
    with edit.applied(tiny_llama):
        lp = _last_token_logprobs(tiny_llama, ps)
    own = torch.stack([lp[i, pairs[p.slot][1]] - lp[i, pairs[p.slot][0]]
                       for i, p in enumerate(ps)])
    assert float(own.abs().max()) < 2e-3
    he_she = lp[:, pairs["subject"][1]] - lp[:, pairs["subject"][0]]
    assert float(he_she[1:3].abs().max()) > 1e-2  # the others are not what was balanced
    assert edit.meta["fitted_prompts"]["abs_logodds"]["after"] == pytest.approx(
        float(own.abs().mean()), abs=1e-3)


def test_strength_scales_each_occupations_own_change(tiny_llama):
    from interp.mitigate.lsdm import stronger

    change = torch.randn(6, 4, dtype=torch.float64)
    templates = ["a", "a", "a", "b", "b", None]
    out = stronger(change, templates, 3.0)
    for rows in ([0, 1, 2], [3, 4]):
        # the context's mean change stays as it is, what each occupation needs beyond it triples
        assert torch.allclose(out[rows].mean(0), change[rows].mean(0))
        assert torch.allclose(out[rows] - out[rows].mean(0),
                              3 * (change[rows] - change[rows].mean(0)))
    assert torch.allclose(out[5], 3 * change[5])  # no template: scaled whole
    assert torch.allclose(stronger(change, None, 3.0), 3 * change)
    # through the solve: prompts without a template (one layer, keys fixed) get an update
    # linear in the change asked for
    records = [{"text": f"The {w} said that", "subject": w} for w in ("nurse", "pilot", "baker")]
    ps = P.from_records(tiny_llama, records)
    top = tiny_llama.arch.n_layers - 1
    kw = dict(layers=[top], site="last", n_prefixes=0, lam=1e-4, tol=1e-3, stats_tokens=1500,
              preserve=None, progress=False)
    one, two = lsdm(tiny_llama, ps, **kw), lsdm(tiny_llama, ps, strength=2.0, **kw)
    d1 = one.updates[top][0] @ one.updates[top][1].T
    d2 = two.updates[top][0] @ two.updates[top][1].T
    assert torch.allclose(d2, 2 * d1, rtol=1e-3, atol=1e-6)
    assert two.meta["strength"] == 2.0


def test_lsdm_is_its_phases_in_order(tiny_llama):
    # Each phase is a function a reader can call: run them by hand and get lsdm's edit exactly.
    from interp.mitigate import lsdm as L
    from interp.mitigate.edit import forward_order
    from interp.mitigate.targets import optimise_targets

    ps = P.professions(tiny_llama, "train", templates=P.TEMPLATES[:2])[:8]
    keep = P.definitional(tiny_llama, split="train", templates=P.TEMPLATES[:1])[:4]
    settings = L.LSDMSettings(stats_tokens=1000, lam=10.0)
    edit = lsdm(tiny_llama, ps, layers=[2, 3], attn_layers=[3], preserve=keep,
                settings=settings, strict=False, progress=False)

    sites = forward_order([2, 3], [3])
    prefixes, v, kept = L.fit_versions(tiny_llama, ps, keep, settings)
    C = L.statistics(tiny_llama, [2, 3], [3], settings, progress=False)
    targets, report = optimise_targets(tiny_llama, v, sites[-1][1], iters=settings.iters,
                                       clamp_norm=settings.clamp_norm, tol=settings.tol,
                                       strict=False, progress=False)
    before = tiny_llama.fingerprint()
    backup = {}
    try:
        fitted = L.solve(tiny_llama, sites, v, kept, targets, C, settings, backup)
        measured, after = L.measure_fitted(tiny_llama, ps)
    finally:
        L.restore(tiny_llama, backup)
    assert tiny_llama.fingerprint() == before
    for component, layers in fitted.updates.items():
        for layer, (U, V) in layers.items():
            ours = edit.updates[layer] if component == "mlp" else edit.attn[layer]
            torch.testing.assert_close(U, ours[0], rtol=0, atol=0)
            torch.testing.assert_close(V, ours[1], rtol=0, atol=0)
    assert edit.meta["targets_reached"] == L.reach(fitted)
    assert edit.meta["fitted_prompts"]["abs_logodds"]["after"] == after["abs_logodds"]
    assert edit.meta["prefixes"] == prefixes == []


def test_settings_are_defined_once_and_named_settings_are_checked(tiny_llama):
    from interp.mitigate.finetune import FTSettings, finetune
    from interp.mitigate.lsdm import LSDMSettings

    assert LSDMSettings().with_(lam=5.0).lam == 5.0
    assert LSDMSettings(site="subject").prefixes == 1 and LSDMSettings().prefixes == 0
    ps = P.professions(tiny_llama, "train", templates=P.TEMPLATES[:1])[:2]
    with pytest.raises(EditError, match="unknown LSDM setting 'steps'.*lam, site"):
        lsdm(tiny_llama, ps, layers=[0], steps=3)
    with pytest.raises(EditError, match="unknown fine-tuning setting 'lam'"):
        finetune(tiny_llama, ps, layers=[0], lam=3.0)
    # the CLI's options default to the same values
    from typer.main import get_command

    from interp.cli import app

    edit_options = {p.name: p.default for p in get_command(app).commands["edit"].params}
    assert edit_options["preserve_weight"] == LSDMSettings.preserve_weight
    assert edit_options["site"] == LSDMSettings.site
    assert FTSettings().steps == FTSettings.steps


def test_every_entry_point_reads_its_sites_from_one_function(tiny_llama):
    from interp.mitigate.sites import (MLP_WIDTH, N_ATTN, find_sites, locate_sites,
                                       trace_for_sites)

    ps = P.professions(tiny_llama, "train", templates=P.TEMPLATES[:2])
    located = trace_for_sites(tiny_llama, ps, "last", progress=False)
    sites = locate_sites(located, "last")
    n = tiny_llama.arch.n_layers
    assert sites.mlp == list(range(max(0, n - MLP_WIDTH), n)) and len(sites.attn) == N_ATTN
    profile = located.layer_profile("attn", "last token")
    assert sites.attn == sorted(profile[profile.index.isin(sites.mlp)].nlargest(N_ATTN).index)
    assert locate_sites(located, "subject").mlp == located.suggest_layers("mlp")
    again, _ = find_sites(tiny_llama, ps, "last")
    assert again == sites
    # lsdm without layers traces its prompts and reads their sites the same way
    few = ps[:4]
    expected, _ = find_sites(tiny_llama, few, "last")
    edit = lsdm(tiny_llama, few, stats_tokens=1000, strict=False, progress=False)
    assert (edit.layers, edit.attn_layers, edit.meta["sites_chosen"]) == expected


def test_a_gauss_newton_step_zeroes_linear_log_odds():
    from interp.mitigate.targets import gauss_newton_step

    g = torch.Generator().manual_seed(0)
    J = torch.randn(5, 12, generator=g, dtype=torch.float64)  # 5 versions, d_model 12
    members = [torch.tensor([0, 1, 2]), torch.tensor([3, 4])]  # two subjects
    delta = torch.zeros(2, 12)
    y = torch.randn(5, generator=g, dtype=torch.float64)
    after = gauss_newton_step(delta, J, y, members, damping=1e-9)
    owner = torch.tensor([0, 0, 0, 1, 1])
    # the linearised log-odds y + J δ vanish for every version of every subject
    assert (y + (J * after[owner].double()).sum(1)).abs().max() < 1e-4
    assert delta.abs().max() == 0  # the given δ is left as it was
