"""Memory: the facade users touch (``OutputProfileMemory``), its read path and saved
selections, and the tracked-output feedback loop."""

from langchain_outprofile.memory.facade import OutputProfileMemory, ProfileStats
from langchain_outprofile.memory.reader import BudgetTooSmallWarning

__all__ = ["BudgetTooSmallWarning", "OutputProfileMemory", "ProfileStats"]
