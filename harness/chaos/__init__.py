"""Faults for chaos runs: the embedded Toxiproxy (:mod:`harness.chaos.toxiproxy`) and what drives it."""
