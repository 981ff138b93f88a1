"""``python -m harness.load.locust_main``: Locust's own command line, with gevent's patching minus three modules.

``import locust`` runs ``gevent.monkey.patch_all()``. The run's session starts the embedded stack (subprocesses) on
the call engine's asyncio loop, in a real thread: with ``subprocess`` and ``os`` patched, gevent's ``Popen`` asks
for a child watcher of the *default* gevent loop and fails in that thread ("child watchers are only available on the
default loop"), and a patched ``signal`` would take SIGCHLD from asyncio. So this entry point patches everything else
first and tells Locust not to patch again; Locust itself needs none of the three (it does not fork here).
"""

from __future__ import annotations

import os
import sys

from gevent import monkey

monkey.patch_all(subprocess=False, os=False, signal=False)
os.environ["LOCUST_SKIP_MONKEY_PATCH"] = "1"

from locust.main import main  # noqa: E402  (after the patching, by design)

if __name__ == "__main__":
    sys.exit(main())
