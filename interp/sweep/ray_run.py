"""Running a sweep's pending cells as Ray tasks: `run_sweep_ray`, `interp sweep --ray`.

Each Ray worker is an actor that loads the model once and keeps a `SweepRun` (its prompt sets, the
baseline, the KL reference), so the model is loaded once per worker, not per cell. Workers
write each cell's artefacts and done.json into the sweep's directory themselves, exactly as the
single-process run does; the driver rebuilds results.csv as cells finish. So the directory must
be one that every worker sees at the same path: a local Ray, or a cluster on a shared
filesystem. What is left pending after a kill is rerun the same way by either kind of run.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

from tqdm.auto import tqdm

from ..common.errors import InterpError
from ..common.ray_pool import parallelism, ray_session
from .config import read_config, save_config
from .grid import Cell, grid, read_done
from .results import SweepResult, write_results
from .run import SweepRun, check_against_model, load_sweep_model, resolve_out_dir, stale_cells


def run_sweep_ray(config, out_dir=None, *, address: bool | str = True,
                  workers: int | None = None, progress: bool | None = None) -> SweepResult:
    """`run_sweep` with the pending cells spread over Ray workers; the same directory layout
    and results table. address: True for a local Ray started here (`workers` CPUs, default
    every core), or a cluster's address; a Ray this process has already joined is used as it
    is. workers: how many model-holding workers (default: one per CPU, at most one per
    pending cell)."""
    cfg = read_config(config)
    out = resolve_out_dir(cfg, out_dir)
    cells = grid(cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.toml")
    pending = [c for c in cells if read_done(out, c) is None]
    if pending:
        with ray_session(address, workers) as ray:
            _run_pending(ray, cfg, out, cells, pending, workers, progress)
    write_results(out, cells)
    return SweepResult.load(out)


def _run_pending(ray, cfg, out: Path, cells: list[Cell], pending: list[Cell], workers,
                 progress) -> None:
    n = min(parallelism(ray, workers), len(pending))
    worker = ray.remote(num_cpus=1)(_Worker)
    actors = [worker.remote(cfg, str(out.resolve())) for _ in range(n)]
    try:
        loaded = ray.get([a.load.remote() for a in actors])
        for result in loaded:
            if isinstance(result, InterpError):  # a bad model spec or grid, said plainly
                raise result
        pending += stale_cells(out, cells, pending, loaded[0])
        pending.sort(key=cells.index)
        write_results(out, cells)
        bar = tqdm(total=len(cells), initial=len(cells) - len(pending), desc="sweep",
                   unit="cell", disable=progress is False)
        with bar:
            for cell in _dispatch(ray, actors, pending):
                write_results(out, cells)
                bar.set_postfix_str(cell.label(), refresh=False)
                bar.update()
    finally:
        for a in actors:  # a Ray we did not start goes on running: free its CPUs
            ray.kill(a)


def _dispatch(ray, actors, pending: list[Cell]):
    """Each cell as it finishes, running on whichever worker is free. Edit cells wait for the
    baseline, which one worker measures first (while the others run traces), so that it is
    measured once and the others read it from baseline.json."""
    queue, free, inflight = deque(pending), list(actors), {}
    baseline = not any(c.kind == "edit" for c in pending)
    if not baseline:
        a = free.pop()
        inflight[a.baseline.remote()] = (a, None)
    try:
        while queue or inflight:
            # Cells come traces first, so an edit at the head means only edits are left.
            while free and queue and (baseline or queue[0].kind != "edit"):
                a = free.pop()
                cell = queue.popleft()
                inflight[a.cell.remote(cell)] = (a, cell)
            [ref], _ = ray.wait(list(inflight), num_returns=1)
            a, cell = inflight.pop(ref)
            ray.get(ref)  # a crash inside a cell stops the sweep, as in one process
            free.append(a)
            if cell is None:
                baseline = True
            else:
                yield cell
    finally:
        for ref in inflight:
            ray.cancel(ref)


class _Worker:
    """A Ray actor: one model, one `SweepRun`, many cells."""

    def __init__(self, cfg, out: str):
        self.cfg, self.out, self.run = cfg, Path(out), None

    def load(self):
        """The model's fingerprint, or the InterpError that stops the sweep (returned, not
        raised, so the driver can raise it as it is)."""
        try:
            model = load_sweep_model(self.cfg)
            check_against_model(self.cfg, model.arch, model.name)
        except InterpError as e:
            return e
        self.run = SweepRun(self.cfg, model, self.out)
        return model.fingerprint()

    def baseline(self) -> None:
        self.run.baseline()

    def cell(self, cell: Cell) -> None:
        self.run.cell(cell)
