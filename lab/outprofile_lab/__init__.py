"""The evaluation and the benchmarks of langchain-outprofile, as a distribution of their own.

``outprofile_lab.evaluation`` scores personalization strategies with a real language model
(``outprofile eval``); ``outprofile_lab.bench`` times the memory (``outprofile bench``). They
use the library's internals (the store, the selection), so a version of the lab goes with the
library's version of the same checkout.
"""
