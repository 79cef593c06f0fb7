"""Behaviour of transformers and TransformerLens that interp relies on beyond their documented
APIs. Each failure names the installed versions and what changed, so a new upstream release
that breaks us is a named problem before a user meets it (CI runs these on the newest versions
pyproject.toml allows, besides the lock)."""

import pytest
import torch

from interp.model.arch import HOOKS
from interp.model.runner import Runner, kv_prefix, new_cache
from interp.model.upstream import cache_kwargs, version_report, versions

pytestmark = pytest.mark.smoke

IDS = [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]]


def changed(what: str) -> str:
    return f"{versions()}: {what}"


def plain_hidden(model, ids):
    """The final hidden states of an ordinary HF forward, no cache, no slicing."""
    with torch.no_grad():
        return model.hf.base_model(input_ids=torch.tensor(ids)).last_hidden_state


def test_a_forward_through_the_bridge_fills_the_kv_cache(tiny_family):
    body = tiny_family.hf.base_model
    cache = new_cache()
    with torch.no_grad():
        body(input_ids=torch.tensor(IDS), use_cache=True, **cache_kwargs(body, cache))
    filled = [cache.get_seq_length(layer) for layer in range(tiny_family.arch.n_layers)]
    assert filled == [len(IDS[0])] * tiny_family.arch.n_layers, changed(
        f"a forward through the bridge's blocks left the KV cache at {filled} positions per "
        "layer: the cache no longer reaches the attention (transformers renamed the argument "
        "again, or TransformerLens's attention reads it under another name)")


def test_a_forward_continues_from_a_kv_cache(tiny_family):
    body = tiny_family.hf.base_model
    cache = new_cache()
    split = 4
    with torch.no_grad():
        head = torch.tensor([ids[:split] for ids in IDS])
        body(input_ids=head, use_cache=True, **cache_kwargs(body, cache))
        tail = body(input_ids=torch.tensor([ids[split:] for ids in IDS]), use_cache=True,
                    position_ids=torch.arange(split, len(IDS[0]))[None],
                    **cache_kwargs(body, cache)).last_hidden_state
    full = plain_hidden(tiny_family, IDS)[:, split:]
    assert torch.allclose(tail, full, atol=1e-5), changed(
        "continuing a forward from a KV cache no longer equals the full forward (max diff "
        f"{(tail - full).abs().max():.2e}): keys/values are not reused as before")


def test_resuming_from_a_block_equals_the_full_forward(tiny_family):
    """Runner runs the HF body over a slice of its block list, from the stream entering a
    block: the layers must keep their own index and the body must run whatever list it has; a
    body whose blocks differ by kind (config.layer_types) must pick a block's kind by its
    position in the list it runs (Runner cuts layer_types with the list)."""
    runner = Runner(tiny_family)
    store = {}
    k = 1  # Gemma 2/3's tiny models alternate sliding and full blocks: block 1 is a full one
    name = tiny_family.arch.hook("resid", k)
    keep = [(name, lambda a, hook: store.update(x=a))]
    with torch.no_grad(), tiny_family.bridge.hooks(fwd_hooks=keep):
        full = runner.final_hidden(runner.embed(torch.tensor(IDS)), 0)
        resumed = runner.final_hidden(store["x"], k)
    assert torch.allclose(resumed, full, atol=1e-5), changed(
        f"running the HF body over its blocks from block {k} no longer equals the full forward "
        f"(max diff {(resumed - full).abs().max():.2e}): how the body runs its block list changed")


def test_a_cache_cut_to_rows_and_a_prefix_serves_a_resumed_forward(tiny_family):
    """kv_prefix uses only Cache's public methods (copy, batch_select_indices, crop)."""
    runner = Runner(tiny_family)
    rows, p = torch.tensor([1, 0, 1]), 3
    with torch.no_grad():
        _, cache = runner.final_hidden(runner.embed(torch.tensor(IDS)), 0, keep_cache=True)
        prefix = kv_prefix(cache, rows, p)
        tails = torch.tensor([IDS[r][p:] for r in rows.tolist()])
        got = runner.final_hidden(runner.embed_at(tails, p), 0, prefix=prefix)
    want = plain_hidden(tiny_family, [IDS[r] for r in rows.tolist()])[:, p:]
    assert cache.get_seq_length() == len(IDS[0]), changed("kv_prefix changed the cache it cut")
    assert torch.allclose(got, want, atol=1e-5), changed(
        "selecting rows of a KV cache (batch_select_indices) and cropping it (crop with a "
        "negative count) no longer keeps the first positions of those rows")



def test_a_forward_whose_batch_grows_at_a_block_equals_full_forwards(tiny_family):
    """The trace engine's shared forwards: a hook appends rows to the stream entering a block,
    the cache holds at each layer only the rows alive there (`cache.layers`,
    `batch_select_indices` per layer), and one (1, 1, q, kv) additive mask, which transformers
    takes as it is, serves every row."""
    runner = Runner(tiny_family)
    joins, p = 2, 3
    name = tiny_family.arch.hook("resid", joins)
    store = {}
    with torch.no_grad():
        with tiny_family.bridge.hooks(fwd_hooks=[(name, lambda a, hook: store.update(x=a))]):
            full, cache = runner.final_hidden(runner.embed(torch.tensor(IDS)), 0, keep_cache=True)
        alive = [1 if layer < joins else 2 for layer in range(tiny_family.arch.n_layers)]
        prefix = kv_prefix(cache, torch.tensor([0, 1]), p, alive=alive)
        first = runner.embed_at(torch.tensor([IDS[0][p:]]), p)
        join = [(name, lambda a, hook: torch.cat([a, store["x"][1:, p:]]))]
        with tiny_family.bridge.hooks(fwd_hooks=join):
            got = runner.final_hidden(first, 0, prefix=prefix, grows=True)
    assert got.shape[0] == 2 and torch.allclose(got, full[:, p:], atol=1e-5), changed(
        "a forward whose batch grows at a block (rows appended by a hook, a cache with "
        "different rows per layer, a shared 4D causal mask) no longer equals the full "
        "forwards: the trace engine's shared forwards depend on it")

@pytest.mark.parametrize("kind", ["resid", "mlp", "attn", "head", "mlp_key"])
def test_bridge_hooks_fire_in_plain_hf_forwards_and_can_write(tiny, kind):
    """Hooks added on the bridge fire when the HF module runs (booting wrapped its submodules),
    and what a hook returns replaces the activation."""
    assert kind in HOOKS
    name = tiny.arch.hook(kind, 1)
    seen = []

    def zero(act, hook):
        seen.append(tuple(act.shape))
        return torch.zeros_like(act)

    with torch.no_grad():
        before = tiny.hf(torch.tensor(IDS)).logits
        with tiny.bridge.hooks(fwd_hooks=[(name, zero)]):
            after = tiny.hf(torch.tensor(IDS)).logits
    assert len(seen) == 1 and seen[0][:2] == (2, len(IDS[0])), changed(
        f"the bridge hook {name} fired {len(seen)} times with shapes {seen} in one HF forward")
    assert not torch.allclose(before, after), changed(
        f"zeroing {name} in a hook no longer changes the HF model's output")


def test_version_report_reads_the_declared_ranges():
    rows = {name: (installed, tested, ok) for name, installed, _, tested, ok in version_report()}
    import transformers

    assert rows["transformers"][0] == transformers.__version__
    assert "<" in rows["transformers"][1] and ">=" in rows["transformers"][1]
    assert rows["transformers"][2], (
        f"transformers {transformers.__version__} is outside the range pyproject.toml declares, "
        f"{rows['transformers'][1]}: reinstall (`make install`) or widen the range after testing")


def test_the_lock_is_inside_the_ranges_pyproject_declares():
    """`make lock` resolves the lock from pyproject.toml; a range changed without a new lock
    (or a lock edited by hand) shows here."""
    from pathlib import Path

    import tomllib
    from packaging.requirements import Requirement
    from packaging.version import Version

    from interp.model.upstream import locked_versions

    root = Path(__file__).resolve().parents[1]
    pins = locked_versions()
    assert pins, "requirements.lock is missing or empty: run `make lock`"
    for line in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate():
            continue
        name = req.name.lower()
        assert name in pins, f"{name} is a dependency but not in requirements.lock: `make lock`"
        assert req.specifier.contains(Version(pins[name])), (
            f"requirements.lock pins {name}=={pins[name]}, outside pyproject's {req.specifier}: "
            "`make lock && make test`")


def test_info_says_plainly_when_a_version_is_outside_the_tested_range(monkeypatch):
    from typer.testing import CliRunner

    import interp.model.upstream as up
    from interp.cli import app

    ok = CliRunner().invoke(app, ["info", "--versions"])
    assert ok.exit_code == 0 and "transformers" in ok.output and "OUTSIDE" not in ok.output
    real = up.version
    monkeypatch.setattr(up, "version", lambda p: "5.99.0" if p == "transformers" else real(p))
    out = CliRunner().invoke(app, ["info", "--versions"])
    assert out.exit_code == 0
    line = next(l for l in out.output.splitlines() if l.startswith("transformers"))
    assert "5.99.0" in line and "OUTSIDE the tested range" in line
    assert "transformers 5.99.0: not a version this release of interp was tested with" in out.output
