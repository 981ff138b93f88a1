"""An embedded Toxiproxy: the v2 HTTP API and TCP toxics of ``toxiproxy-server`` 2.12.0, in Python.

Use it where the real Go server cannot be installed::

    async with EmbeddedToxiproxy("127.0.0.1", 0) as tp:
        ...  # any Toxiproxy client against tp.url

or run it: ``python -m harness.chaos.toxiproxy --host 127.0.0.1 --port 8474``. The contract it keeps is
``shared/protocols/toxiproxy.md``; what every toxic guarantees is ``toxics/CONTRACT.md``.
"""

from harness.chaos.toxiproxy.server import DEFAULT_PORT, EmbeddedToxiproxy, main
from harness.chaos.toxiproxy.toxics import default_toxics

__all__ = ["DEFAULT_PORT", "EmbeddedToxiproxy", "default_toxics", "main"]
