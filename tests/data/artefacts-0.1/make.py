"""Artefacts written by interp before the stage folders (commit 299d37c), for tests/test_artefacts.py."""
import sys, shutil
from pathlib import Path
import interp
print(interp.__file__, file=sys.stderr)
from interp import prompts as P
out = Path(sys.argv[1]); shutil.rmtree(out, ignore_errors=True); out.mkdir(parents=True)
m = interp.load_model("tiny-llama")
ps = P.professions(m, "train", templates=P.TEMPLATES[:1])[:3]
tr = interp.trace(m, ps, kinds=("mlp", "attn"), samples=1, seed=0, progress=False)
tr.save(out / "trace")
edit = interp.lsdm(m, ps, layers=[0, 1], lam=100.0, n_prefixes=0, stats_tokens=1000, strict=False, progress=False)
edit.save(out / "edit.safetensors")
v = interp.verify(m, edit, tr, suites=("definitional", "facts"), n_boot=50, progress=False)
v.save(out / "verification")
cfg = {"model": "tiny-llama", "seed": 0,
       "prompts": {"train": {"source": "professions", "split": "train", "templates": 1, "subjects": 2},
                   "defs": {"source": "definitional", "templates": 1, "subjects": 2}},
       "trace": {"prompts": ["train"], "kinds": [["mlp"]], "samples": 1},
       "edit": {"prompts": "train", "definitional": "defs", "layers": [[0, 1]], "lam": [100.0],
                "suites": ["facts", "definitional"], "strict": False, "n_prefixes": 0, "stats_tokens": 1000}}
interp.run_sweep(cfg, out / "sweep", model=m, progress=False)
