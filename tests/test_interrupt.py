"""Ctrl-C part-way leaves nothing half-written: a trace, an edit fit, an export and a sweep are
interrupted with SIGINT in a real `interp` process, while computing or while their result is
being published (tests/interrupt_harness.py holds that rename open), and every result file left
behind is whole, the previous result survives, and the sweep resumes where it stopped."""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd

from interp.mitigate.edit import Edit

HARNESS = Path(__file__).with_name("interrupt_harness.py")


def _default_sigint():
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Running:
    """An `interp` process whose stderr is collected as it comes (tqdm writes no newlines)."""

    def __init__(self, args, cwd, slow_replace=None):
        env = dict(os.environ, INTERP_PNG="0")
        if slow_replace:
            env["INTERP_TEST_SLOW_REPLACE"] = slow_replace
            cmd = [sys.executable, str(HARNESS), *args]
        else:
            cmd = [sys.executable, "-m", "interp.cli", *args]
        # SIGINT as a terminal delivers it: a test run started in the background inherits
        # "ignore SIGINT", which Python would keep.
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=_default_sigint)
        self.err = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while chunk := os.read(self.proc.stderr.fileno(), 4096):
            self.err += chunk

    def wait_for(self, text: str, timeout: float = 240) -> None:
        end = time.time() + timeout
        while text.encode() not in self.err:
            assert self.proc.poll() is None, f"ended before {text!r}: {self.err.decode()[-2000:]}"
            assert time.time() < end, f"no {text!r} in {timeout} s: {self.err.decode()[-2000:]}"
            time.sleep(0.05)

    def interrupt(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=120)
        self._reader.join(timeout=10)
        return self.err.decode()


def _interrupted(r: Running) -> None:
    err = r.interrupt()
    assert r.proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1].startswith("error: interrupted"), err[-2000:]
    assert "Traceback" not in err


def _leftovers(folder: Path) -> list[str]:
    """Temporary files or folders of an atomic write that was not cleaned up."""
    return [str(p) for p in folder.rglob("*") if p.name.endswith((".tmp", ".old"))]


def _trace(out: Path, limit: int, samples: int = 1, templates: int = 1) -> list[str]:
    return ["trace", "-m", "tiny-llama", "--prompts", "train", "--templates", str(templates),
            "--limit", str(limit), "--samples", str(samples), "--out", str(out)]


def test_interrupted_trace_writes_nothing_and_keeps_the_last_result(tmp_path):
    out = tmp_path / "trace"
    done = subprocess.run([sys.executable, "-m", "interp.cli", *_trace(out, 12)], cwd=tmp_path,
                          capture_output=True, text=True, env=dict(os.environ, INTERP_PNG="0"))
    assert done.returncode == 0, done.stderr
    before = (out / "cells.csv").read_bytes()

    r = Running(_trace(out, 1000, samples=3, templates=6), tmp_path)  # ~15 s uninterrupted
    r.wait_for("run/s]")  # the trace's progress bar: patched runs are being computed
    _interrupted(r)
    assert (out / "cells.csv").read_bytes() == before

    r = Running(_trace(out, 13), tmp_path, slow_replace="trace")
    r.wait_for("PUBLISHING")  # the new result is whole in its temporary folder, not yet in place
    _interrupted(r)
    assert (out / "cells.csv").read_bytes() == before
    assert len(json.loads((out / "prompts.json").read_text())) == 12
    assert not _leftovers(tmp_path)


def test_interrupted_edit_fit_and_export_leave_the_previous_files_whole(tmp_path):
    edit = tmp_path / "edit" / "edit.safetensors"
    fit = ["edit", "-m", "tiny-llama", "--templates", "1", "--layers", "1,2", "--out",
           str(edit.parent)]
    done = subprocess.run([sys.executable, "-m", "interp.cli", *fit], cwd=tmp_path,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    saved = edit.read_bytes()

    r = Running([*fit, "--seed", "1"], tmp_path)
    r.wait_for("fitting LSDM")
    _interrupted(r)
    r = Running([*fit, "--seed", "1"], tmp_path, slow_replace="edit.safetensors")
    r.wait_for("PUBLISHING")
    _interrupted(r)
    assert edit.read_bytes() == saved
    assert Edit.load(edit).layers == [1, 2]

    hf, single = tmp_path / "export" / "hf", tmp_path / "export" / "model.safetensors"
    for path, fmt in ((hf, "hf"), (single, "safetensors")):
        r = Running(["export", str(path), "-m", "tiny-llama", "--format", fmt, "--edit",
                     str(edit)], tmp_path, slow_replace=path.name)
        r.wait_for("PUBLISHING")
        _interrupted(r)
        assert not path.exists()
    assert not _leftovers(tmp_path)


SWEEP = """
model = "tiny-llama"
out = "{out}"
[prompts.train]
source = "professions"
split = "train"
templates = 1
subjects = 4
[prompts.test]
source = "professions"
split = "test"
templates = 1
subjects = 4
[edit]
prompts = "train"
eval = "test"
layers = [[1], [2], [1, 2]]
lam = [1.0, 10.0]
suites = ["definitional"]
"""


def test_interrupted_sweep_resumes_where_it_stopped(tmp_path):
    out = tmp_path / "sweep"
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP.format(out=out))
    r = Running(["sweep", str(config)], tmp_path)
    end = time.time() + 240
    while len(list(out.glob("cells/*/done.json"))) < 2:  # part-way: some cells finished
        assert r.proc.poll() is None and time.time() < end, r.err.decode()[-2000:]
        time.sleep(0.05)
    _interrupted(r)
    finished = {p.parent.name: p.stat().st_mtime_ns for p in out.glob("cells/*/done.json")}
    assert 2 <= len(finished) < 6
    for p in out.glob("cells/*/done.json"):
        json.loads(p.read_text())  # whole
    pd.read_csv(out / "results.csv")  # whole

    again = subprocess.run([sys.executable, "-m", "interp.cli", "sweep", str(config)],
                           cwd=tmp_path, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 6 and (results["status"] == "done").all()
    for cell, mtime in finished.items():  # resumed: the finished cells were not run again
        assert (out / "cells" / cell / "done.json").stat().st_mtime_ns == mtime
    assert not _leftovers(tmp_path)
