"""Memory: the facade users touch (``OutputProfileMemory``), its read path and saved
selections, the tracked-output feedback loop, and retention."""

from langchain_outprofile.memory.facade import OutputProfileMemory, ProfileStats
from langchain_outprofile.memory.reader import BudgetTooSmallWarning
from langchain_outprofile.memory.retention import Expired

__all__ = ["BudgetTooSmallWarning", "Expired", "OutputProfileMemory", "ProfileStats"]
