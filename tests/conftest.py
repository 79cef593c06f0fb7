import os

# Tests never reach a model hub: the bundled model and tiny random models are all they use.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `make test` runs two pytest-xdist workers on CI's two cores: one torch thread each (and in the
# notebook kernels and CLI processes they start), where two threads each would fight for them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
# HTML figures only: a PNG costs seconds of kaleido where a Chromium is installed; test_figures
# checks the PNG path on its own.
os.environ["INTERP_PNG"] = "0"
# Statistics caches go to a fresh folder, so tests never read a stale or a user's cache. It holds
# the bundled model's converted weights (over 1 GB), so it goes when the run ends: CI's disk is
# shared with the smoke run's second virtualenv that comes after.
_CACHE = __import__("tempfile").mkdtemp(prefix="interp-test-cache-")
os.environ["INTERP_CACHE"] = _CACHE
__import__("atexit").register(__import__("shutil").rmtree, _CACHE, ignore_errors=True)

import pytest  # noqa: E402

import interp  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama():
    return interp.load_model("tiny-llama")


@pytest.fixture(scope="session")
def tiny_gpt2():
    return interp.load_model("tiny-gpt2")


@pytest.fixture(scope="session", params=["tiny-llama", "tiny-gpt2"])
def tiny(request, tiny_llama, tiny_gpt2):
    return tiny_llama if request.param == "tiny-llama" else tiny_gpt2


@pytest.fixture(scope="session")
def tokenizer():
    from interp.model.load import bundled_tokenizer

    return bundled_tokenizer()


@pytest.fixture(scope="session")
def bundled():
    """The bundled SmolLM2-135M-Instruct, loaded once for the whole session."""
    return interp.load_model()


_FAMILY_MODELS: dict = {}


def _family_model(name):
    if name not in _FAMILY_MODELS:
        _FAMILY_MODELS[name] = interp.load_model(name)
    return _FAMILY_MODELS[name]


@pytest.fixture(params=__import__("interp.model.tiny", fromlist=["tiny_names"]).tiny_names())
def tiny_family(request):
    """A tiny random model of each supported family (loaded once per session)."""
    return _family_model(request.param)
