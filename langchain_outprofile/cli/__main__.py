"""``python -m langchain_outprofile.cli``: the ``outprofile`` command (same entry point)."""

from langchain_outprofile.cli.app import main

if __name__ == "__main__":
    main()
