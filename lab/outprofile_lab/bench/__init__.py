"""Bench: the benchmark scenarios (``outprofile bench``), shipped in the wheel: synthetic
users, a real ``chroma run`` server, and the timing harness that prints numbers."""
