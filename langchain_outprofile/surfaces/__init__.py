"""Surfaces: the profile block in LangChain: an LCEL injector, a retriever, output
tracking, and (with the ``agents`` extra) a ``create_agent`` middleware. Each depends on
:class:`~langchain_outprofile.types.ProfileSource`, not on the memory class."""
