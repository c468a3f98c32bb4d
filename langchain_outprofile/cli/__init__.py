"""CLI: the ``outprofile`` command: store, inspect and inject profiles; the demo; the local
model; evaluation and benchmarks from the same entry point."""

from langchain_outprofile.cli.app import app, main

__all__ = ["app", "main"]
