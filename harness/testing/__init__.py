"""Test kits shipped with the harness: agents with known behaviour to check the harness's own measurements."""
