"""Ray for the commands that spread work over processes or machines (`interp corpus count
--ray`, `interp sweep --ray`): joining or starting a Ray cluster, and running tasks with a bound
on how many are in flight.

Ray is optional (`pip install 'interp[ray]'`); it is imported only when asked for.
"""

from __future__ import annotations

import contextlib
import logging
import re
import socket
from collections.abc import Callable, Iterable, Iterator

from .errors import InterpError


def require_ray():
    """The `ray` module, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise InterpError("Ray is not installed: pip install 'interp[ray]' (or run without "
                          "--ray)") from None
    return ray


def check_workers(workers: int | None) -> None:
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise InterpError(f"workers must be a positive number of Ray workers, not {workers!r}")


@contextlib.contextmanager
def ray_session(address: bool | str = True, workers: int | None = None):
    """Yield the `ray` module, connected: to the Ray this process has already joined (left
    running afterwards: it is the caller's), else to the cluster at `address` when it is a
    string ("auto", "ray://host:10001", ...), else to a local Ray started here with `workers`
    CPUs (None: every core) and shut down on the way out."""
    check_workers(workers)
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    options = {"include_dashboard": False, "logging_level": logging.WARNING}
    try:
        if isinstance(address, str):
            _reachable(address)
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=workers, **options)
    except (ConnectionError, ValueError, RuntimeError) as e:
        where = f"the Ray cluster at {address}" if isinstance(address, str) else "a local Ray"
        raise InterpError(f"could not start or join {where}: {e}") from e
    try:
        yield ray
    finally:
        ray.shutdown()


def _reachable(address: str) -> None:
    """A host:port (or ray://host:port) that nothing answers on, said at once: Ray itself
    retries such an address for many minutes."""
    m = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address.strip())
    if m is None:  # "auto", "local": Ray finds the cluster itself
        return
    try:
        socket.create_connection((m[1], int(m[2])), timeout=10).close()
    except OSError as e:
        raise InterpError(f"nothing answers at the Ray address {address} ({e}): start the "
                          "cluster there (`ray start --head`) or correct --ray-address") from None


def parallelism(ray, workers: int | None) -> int:
    """How many tasks to keep in flight: `workers`, else the cluster's CPUs."""
    return workers or max(1, int(ray.cluster_resources().get("CPU", 1)))


def as_completed(ray, submit: Callable, items: Iterable, limit: int) -> Iterator[tuple]:
    """(item, result) for each item as its task finishes, with at most `limit` tasks in flight
    (so that `workers` bounds the work on a shared cluster too). submit(item) -> an ObjectRef.
    Tasks still in flight when the caller stops early (an error, a break) are cancelled."""
    todo = iter(items)
    inflight: dict = {}
    try:
        while True:
            while len(inflight) < limit:
                item = next(todo, _END)
                if item is _END:
                    break
                inflight[submit(item)] = item
            if not inflight:
                return
            [ref], _ = ray.wait(list(inflight), num_returns=1)
            item = inflight.pop(ref)
            yield item, ray.get(ref)
    finally:
        for ref in inflight:
            ray.cancel(ref)


_END = object()
