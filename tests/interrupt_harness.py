"""`interp` as a user runs it, except that the rename which publishes one chosen result (its
path ends with $INTERP_TEST_SLOW_REPLACE) first announces itself on stderr and waits: a SIGINT
sent then lands while that result is being written, the worst moment for it."""

import os
import sys
import time

_real = os.replace


def _slow(src, dst, *args, **kw):
    if str(dst).endswith(os.environ["INTERP_TEST_SLOW_REPLACE"]) and not _slow.done:
        _slow.done = True  # once: putting an old result back after the interrupt goes through
        print(f"PUBLISHING {dst}", file=sys.stderr, flush=True)
        time.sleep(300)
    return _real(src, dst, *args, **kw)


_slow.done = False


os.replace = _slow

from interp.cli import main  # noqa: E402

main()
