"""Test-session settings.

``import locust`` monkey-patches the whole process with gevent (sockets, threads, select). The asyncio tests in this
process must never run patched, so Locust's classes are imported here unpatched; every Locust *run* in the tests is a
subprocess, which the harness starts without this variable (harness.load.launch drops it).
"""

import os

os.environ.setdefault("LOCUST_SKIP_MONKEY_PATCH", "1")
