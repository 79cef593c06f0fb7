#!/usr/bin/env python3
"""CI's look upstream: the smoke tests (`pytest -m smoke`) in a second virtualenv holding the
newest versions pyproject.toml allows, i.e. what `pip install` gives a new user today.

- Every package is compared with requirements.lock (what `make test` just passed on).
- If the smoke run fails, each direct dependency that is newer than the lock is put back to its
  locked version in turn, until the failing tests pass again: that package and version are named,
  and the script exits 1 (CI fails).
- Then, for the libraries we cap (an upper bound in pyproject.toml), a release newer than the cap
  is tried too, and the outcome is reported (raise the cap, or a known problem to fix first);
  users do not get those releases, so this part only fails CI with --strict-ahead.

torch stays at the build on this machine's disk (the Makefile's TORCH): a newer one is a CUDA
build of several GB, and torch is not among the libraries whose internals we touch.
Only the standard library is used here, so the system Python can run it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-latest"
PY = VENV / "bin" / "python"
LOCK = ROOT / "requirements.lock"
PYTEST_CACHE = VENV / "pytest-cache"
NEEDS_GB = 3.5  # the virtualenv (2.1 GB, torch 0.75 of it) and the test cache (1.4 GB)


def say(msg: str = "") -> None:
    print(msg, flush=True)


def run(cmd, **kw) -> subprocess.CompletedProcess:
    say("+ " + " ".join(map(str, cmd)))
    return subprocess.run(list(map(str, cmd)), **kw)


def pip(*args: str) -> None:
    # No wheel cache: the second virtualenv is thrown away, and the disk is CI's narrowest part.
    run([PY, "-m", "pip", *args, "--no-cache-dir"], check=True)


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    out = subprocess.run([PY, "-m", "pip", "list", "--format=json"], capture_output=True,
                         text=True, check=True).stdout
    return {norm(d["name"]): d["version"] for d in json.loads(out)}


def differs(a: str, b: str) -> bool:
    """Versions differ beyond a local tag: the lock records torch 2.13.0 for 2.13.0+cpu."""
    return a.split("+")[0] != b.split("+")[0]


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", line)
        if m:
            pins[norm(m.group(1))] = m.group(2)
    return pins


def direct_requirements() -> dict[str, str]:
    """name -> specifier of pyproject's dependencies (markers left out)."""
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    out = {}
    for d in deps:
        m = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*([^;]*)", d)
        out[norm(m.group(1))] = m.group(2).strip()
    return out


def smoke(*extra: str) -> int:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONDONTWRITEBYTECODE="1")
    return run([PY, "-m", "pytest", "-q", "-m", "smoke", "-rf", "-o",
                f"cache_dir={PYTEST_CACHE}", *extra], cwd=ROOT, env=env).returncode


def newest_release(name: str) -> str | None:
    r = subprocess.run([PY, "-m", "pip", "index", "versions", name], capture_output=True,
                       text=True)
    m = re.search(rf"^{re.escape(name)} \(([^)]+)\)", r.stdout, re.M | re.I)
    return m.group(1) if m else None


def vkey(v: str):
    return tuple(int(x) if x.isdigit() else 0 for x in re.findall(r"\d+", v.split("+")[0]))


def build(torch: str, bundled: str) -> None:
    shutil.rmtree(VENV, ignore_errors=True)
    free = shutil.disk_usage(ROOT).free / 2**30
    if free < NEEDS_GB:
        raise SystemExit(f"smoke-latest needs about {NEEDS_GB} GB free for its virtualenv and "
                         f"the model's converted weights; {free:.1f} GB is free under {ROOT}. "
                         "Free some (old test caches in the temp folder, `make clean`) and rerun.")
    run([sys.executable, "-m", "venv", VENV], check=True)
    pip("install", "--quiet", f"torch=={torch}")
    constraint = VENV / "torch.txt"
    constraint.write_text(f"torch=={torch}\n")
    pip("install", "--quiet", "--upgrade", "--upgrade-strategy", "eager", "-c", str(constraint),
        "-e", f"{ROOT}[dev]")
    pip("install", "--quiet", "--no-deps", bundled)


def name_the_culprit(now: dict, pins: dict, direct: dict) -> list[str]:
    """Put each newer direct dependency back to its locked version, alone, and rerun the failed
    tests; the first one whose return makes them pass is named."""
    newer = [n for n in direct if n in pins and n in now and differs(now[n], pins[n])]
    newer.sort(key=lambda n: ("<" not in direct[n], n))  # the capped libraries first
    for name in newer:
        say(f"\n--- does {name} {now[name]} break it? trying the locked {name}=={pins[name]}")
        pip("install", "--quiet", f"{name}=={pins[name]}")
        passed = smoke("--lf") == 0
        pip("install", "--quiet", f"{name}=={now[name]}")
        if passed:
            return [f"{name} {now[name]} (the lock has {pins[name]}): the failing smoke tests "
                    f"pass again with {name}=={pins[name]}"]
    return [f"{n} {now[n]} (lock {pins[n]})" for n in newer] or ["no direct dependency differs "
                                                                  "from the lock"]


def ahead_of_caps(direct: dict, strict: bool) -> int:
    """Releases newer than our caps: does the smoke run pass on them?"""
    capped = [n for n, spec in direct.items() if "<" in spec]
    now = installed()
    ahead = {}
    for name in capped:
        latest = newest_release(name)
        if latest and name in now and vkey(latest) > vkey(now[name]):
            ahead[name] = latest
    if not ahead:
        say("\nNo release beyond our caps (" + ", ".join(f"{n} {now.get(n)}" for n in capped)
            + " are the newest).")
        return 0
    names = ", ".join(f"{n} {v} (allowed: {direct[n]})" for n, v in ahead.items())
    say(f"\n=== Releases beyond our caps: {names}. Trying them in the same virtualenv.")
    pip("install", "--quiet", *(f"{n}=={v}" for n, v in ahead.items()))
    code = smoke("-k", "not version_report")
    if code == 0:
        say(f"\nUPSTREAM AHEAD: the smoke run passes on {names}. Raise the caps in "
            "pyproject.toml, then `make lock && make test`.")
        return 0
    say(f"\nUPSTREAM AHEAD, KNOWN PROBLEM: the smoke run FAILS on {names} (see the failures "
        "above). Users are protected by the caps; fix this before raising them.")
    return 1 if strict else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch", required=True, help="torch version to keep (the Makefile's TORCH)")
    ap.add_argument("--bundled", required=True, help="the bundled model's package==version")
    ap.add_argument("--strict-ahead", action="store_true",
                    help="also fail when a release beyond our caps fails the smoke run")
    args = ap.parse_args()

    build(args.torch, args.bundled)
    pins, now, direct = locked(), installed(), direct_requirements()
    diff = sorted(n for n in now if n in pins and differs(now[n], pins[n]))
    say("\nNewest allowed versions against the lock: " + (
        ", ".join(f"{n} {pins[n]} -> {now[n]}" for n in diff) or "all the same as the lock"))
    if smoke() != 0:
        culprits = name_the_culprit(now, pins, direct)
        say("\nSMOKE RUN FAILED on the newest versions pyproject.toml allows (the lock passed):")
        for c in culprits:
            say(f"  {c}")
        say("Fix the code for it, or bound the range in pyproject.toml below it; then "
            "`make lock && make test`.")
        return 1
    say("\nSmoke run passed on the newest versions pyproject.toml allows.")
    return ahead_of_caps(direct, args.strict_ahead)


if __name__ == "__main__":
    sys.exit(main())
