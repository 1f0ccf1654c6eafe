"""Shared test helpers, imported as `tests.helpers.<module>` (pytest puts the repository root on `sys.path`; a
subprocess that needs them runs with the root as its working directory or on its PYTHONPATH)."""
