"""Measure what a forget, a delete and an edit leave on disk.

Writes a store in a temporary directory: ana (forgotten), bob (one entry deleted, one
tracked output edited) and carol (kept), optionally makes a backup with ``repair --force``
first, optionally adds more writes after, optionally runs the purge, then greps the bytes
of every file under the store and its backups for each secret and prints the count per
file. Nothing leaves the machine.

    PYTHONPATH=. python scripts/privacy_grep.py            # before / after, no backup
    PYTHONPATH=. python scripts/privacy_grep.py --backup --more 1200 --purge
"""

from __future__ import annotations

import argparse
import tempfile
import uuid
from collections import Counter
from pathlib import Path

from langchain_outprofile import OutputProfileMemory


def occurrences(root: Path, secrets: dict[str, bytes]) -> dict[str, Counter[str]]:
    """For each secret's name, how often its bytes occur in each file under ``root``."""
    found: dict[str, Counter[str]] = {name: Counter() for name in secrets}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for name, secret in secrets.items():
            if n := data.count(secret):
                found[name][str(path.relative_to(root))] += n
    return found


def scenario(store: Path, *, backup: bool, more: int, purge: bool) -> dict[str, bytes]:
    """Write, back up, forget / delete / edit, write more, purge; returns the secrets."""
    tag = uuid.uuid4().hex[:12]
    secrets = {
        "forgotten": f"ana-diary-{tag}".encode(),
        "deleted": f"bob-deleted-{tag}".encode(),
        "pre-edit": f"bob-draft-{tag}".encode(),
        "kept": f"carol-kept-{tag}".encode(),
    }
    memory = OutputProfileMemory.from_path(store)
    for i in range(20):
        memory.add(f"My diary {i}: {secrets['forgotten'].decode()}", user_id="ana")
    gone = memory.add(f"Delete me: {secrets['deleted'].decode()}", user_id="bob")
    memory.add("Bob keeps this.", user_id="bob")
    run = str(uuid.uuid4())
    memory.record_output(f"Draft: {secrets['pre-edit'].decode()}", user_id="bob", run_id=run)
    memory.feedback(run, "endorsed")
    memory.add(f"Carol: {secrets['kept'].decode()}", user_id="carol")
    memory.select("ana")
    memory.select("bob")
    if backup:
        from langchain_outprofile.store.repair import repair

        repair(store, force=True)
        memory = OutputProfileMemory.from_path(store)
    memory.forget("ana")
    memory.delete(gone.id, user_id="bob")
    memory.feedback(run, edited="The edited answer.")
    for i in range(more):
        memory.add(f"Filler {i} {uuid.uuid4().hex}", user_id="dan")
    if purge:
        memory.purge()
    return secrets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backup", action="store_true", help="repair --force before")
    parser.add_argument("--more", type=int, default=0, help="writes after the deletes")
    parser.add_argument("--purge", action="store_true", help="memory.purge() at the end")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        secrets = scenario(root / "store", backup=args.backup, more=args.more, purge=args.purge)
        for name, files in occurrences(root, secrets).items():
            total = sum(files.values())
            print(f"{name}: {total}")
            for file, n in sorted(files.items()):
                print(f"    {n:5d}  {file}")


if __name__ == "__main__":
    main()
