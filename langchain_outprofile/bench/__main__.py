"""``python -m langchain_outprofile.bench``: the benchmark suite (same as ``outprofile bench``)."""

from langchain_outprofile.bench.run import main

main()
