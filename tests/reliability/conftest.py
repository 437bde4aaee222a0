"""Fixtures of the reliability suite (the top-level tests/conftest.py gives out_dir)."""
