"""Store: users' profile entries in Chroma (the memory imports chromadb at run time only here).

``ProfileStore`` reads and writes entries; ``rows`` lays an entry out as a row; ``state``
keeps profile versions and saved selections; ``clients`` opens Chroma and shares one lock
per store location per process.
"""

from langchain_outprofile.store.clients import default_path, http_client
from langchain_outprofile.store.profile_store import DEFAULT_COLLECTION, ProfileStore, Written

__all__ = ["DEFAULT_COLLECTION", "ProfileStore", "Written", "default_path", "http_client"]
