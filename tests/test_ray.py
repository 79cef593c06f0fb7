"""Ray for the corpus counter and the sweep: on a local Ray (2 CPUs, started once for the module
in this process), the distributed count and the distributed sweep give what one process gives,
and both resume after a partial run with the finished work skipped."""

import gzip
import json
import logging
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray
import torch
from typer.testing import CliRunner

from interp.cli import app
from interp.common.errors import InterpError
from interp.common.ray_pool import _reachable, require_ray
from interp.studies import corpus as C
from interp.sweep import run_sweep, run_sweep_ray

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "sweep_tiny.toml"


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # The workers inherit this process's environment (HF_HUB_OFFLINE, the test INTERP_CACHE).
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def same_counts(a, b):
    pd.testing.assert_frame_equal(a.frame, b.frame, check_exact=True)
    assert a.meta == b.meta


# ---------------------------------------------------------------------------------------------
# The corpus counter


def test_ray_count_equals_the_single_process_count_on_the_sample_shards():
    for window in ("sentence", 10):
        one = C.count_corpus(["sample"], window=window, progress=False)
        assert one.meta["n_shards"] > 1 and one.frame.mentions.sum() > 0
        same_counts(C.count_corpus(["sample"], window=window, ray=True, progress=False), one)


def bad_corpus(tmp_path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for shard in C.sample_shards()[:2]:
        shutil.copy(shard, folder / shard.name)
    (folder / "broken.jsonl").write_text('{"text": "The nurse said she"}\nnot json\n')
    with gzip.open(folder / "z.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "The engineer said he was late."}) + "\n")
    return folder


def test_ray_count_treats_an_unreadable_shard_as_one_process_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative shard names, as a user types them
    bad_corpus(tmp_path)
    with pytest.raises(C.CorpusError) as here:
        C.count_corpus(["corpus"], progress=False)
    with pytest.raises(C.CorpusError) as on_ray:
        C.count_corpus(["corpus"], ray=True, progress=False)
    assert str(on_ray.value) == str(here.value)
    assert "corpus/broken.jsonl: line 2 is not JSON" in str(on_ray.value)
    assert "--skip-bad" in str(on_ray.value)

    one = C.count_corpus(["corpus"], skip_bad=True, progress=False)
    spread = C.count_corpus(["corpus"], skip_bad=True, ray=True, progress=False)
    same_counts(spread, one)
    assert [s["shard"] for s in spread.meta["skipped"]] == ["corpus/broken.jsonl"]
    assert spread.meta["documents"] > 1


def test_ray_count_resumes_with_finished_shards_skipped(tmp_path):
    folder = bad_corpus(tmp_path)
    (folder / "broken.jsonl").unlink()
    shards = C.expand([folder])
    out = tmp_path / "out"
    # A run stopped after two shards left their counts, as a killed one does.
    C.count_corpus(shards[:2], out=out, ray=True, progress=False)
    kept = {p: p.stat().st_mtime_ns for p in (out / "shards").glob("*.json")}
    assert len(kept) == 2
    resumed = C.count_corpus(shards, out=out, ray=True, progress=False)
    assert resumed.meta["resumed"] == 2
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # not counted again
    assert len(list((out / "shards").glob("*.json"))) == len(shards)
    fresh = C.count_corpus(shards, progress=False)
    pd.testing.assert_frame_equal(resumed.frame, fresh.frame, check_exact=True)
    # A rerun of the finished count reads every shard back and starts no Ray task.
    assert C.count_corpus(shards, out=out, ray=True, progress=False).meta["resumed"] == 3


def test_cli_corpus_count_on_ray_writes_the_same_table(tmp_path):
    tables = {}
    for name, flags in (("one", []), ("ray", ["--ray", "--workers", "2"])):
        out = tmp_path / name / "counts.csv"
        r = CliRunner().invoke(app, ["corpus", "count", "sample", "--out", str(out), *flags])
        assert r.exit_code == 0, r.output
        tables[name] = pd.read_csv(out)
    pd.testing.assert_frame_equal(tables["ray"], tables["one"], check_exact=True)
    bad = CliRunner().invoke(app, ["corpus", "count", "sample", "--workers", "2"])
    assert bad.exit_code == 2 and "add --ray" in bad.output


def test_without_ray_installed_the_error_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # what `import ray` meets when it is absent
    with pytest.raises(InterpError, match=r"pip install 'interp\[ray\]'"):
        require_ray()


def test_an_address_nothing_answers_on_is_said_at_once():
    # Ray itself would retry it for many minutes. Port 1 of the loopback: refused at once.
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        with pytest.raises(InterpError, match="nothing answers at the Ray address"):
            _reachable(address)
    _reachable("auto")  # Ray's own lookup: nothing to check


# ---------------------------------------------------------------------------------------------
# The sweep


@pytest.fixture(scope="module")
def sweeps(tiny_llama, tmp_path_factory):
    """sweep_tiny in one process and on Ray. Ray's workers run torch on one thread each; the
    single-process run does too here, so that the two can be compared to the last bit (BLAS
    sums in another order on another number of threads)."""
    root = tmp_path_factory.mktemp("sweeps")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = run_sweep(TINY, root / "one", model=tiny_llama, progress=False)
    finally:
        torch.set_num_threads(threads)
    return one, run_sweep_ray(TINY, root / "ray", progress=False)


def table(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "results.csv").drop(columns="seconds")  # wall time differs


def test_ray_sweep_gives_the_single_process_table_and_artefacts(sweeps):
    one, spread = sweeps
    assert len(spread.frame) == 8 and (spread.frame["status"] == "done").all()
    pd.testing.assert_frame_equal(table(spread.out), table(one.out), check_exact=True)
    for cell in one.frame["cell"]:
        files = {p.relative_to(one.cell_dir(cell)) for p in one.cell_dir(cell).rglob("*")}
        assert {p.relative_to(spread.cell_dir(cell))
                for p in spread.cell_dir(cell).rglob("*")} == files
    baseline = [json.loads((s.out / "baseline.json").read_text()) for s in sweeps]
    assert baseline[0] == baseline[1]
    # The KL reference is the unedited model, on every worker: no edit reads KL 0.
    assert (spread.frame.loc[spread.frame.type == "edit", "kl_after"] > 0).all()


def test_ray_sweep_resumes_with_only_unfinished_cells_rerun(sweeps, tmp_path):
    out = tmp_path / "ray"
    shutil.copytree(sweeps[1].out, out)
    before = table(out)
    redo = before["cell"].iloc[0]
    (out / "cells" / redo / "done.json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/done.json")}
    result = run_sweep_ray(TINY, out, progress=False)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert (out / "cells" / redo / "done.json").is_file()
    pd.testing.assert_frame_equal(table(result.out), before, check_exact=True)
