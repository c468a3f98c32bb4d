"""``python -m outprofile_lab.bench``: the benchmark suite (same as ``outprofile bench``)."""

from outprofile_lab.bench.run import main

main()
