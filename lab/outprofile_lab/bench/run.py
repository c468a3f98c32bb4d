"""The benchmark suite: ingest, add latency, cold/warm select+render, and the similarity baseline.

Run ``python -m outprofile_lab.bench.run`` (small default sizes, a few minutes on 2 cores) or
``outprofile bench``; ``--help`` lists the size flags. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import chromadb
import typer
from chromadb.config import Settings

from langchain_outprofile import (
    InvalidInputError,
    OutputProfileMemory,
    ReadOptions,
    StyleEmbeddings,
)
from langchain_outprofile.store.rows import PAYLOAD_KEY
from outprofile_lab.bench.big_user import BIG_USER_COLUMNS, big_user_scenario
from outprofile_lab.bench.big_write import BIG_WRITE_COLUMNS, big_write_scenario
from outprofile_lab.bench.live_loop import LIVE_LOOP_COLUMNS, live_loop_scenario
from outprofile_lab.bench.prompt_cache import prompt_cache_command
from outprofile_lab.bench.server import chroma_server
from outprofile_lab.bench.shared_prefix import shared_prefix_command
from outprofile_lab.bench.synthetic import queries, user_entries, user_name

__all__ = ["SCENARIOS", "bench_command", "main", "shared_prefix_table"]

SCENARIOS = ("suite", "live-loop", "prompt-cache", "shared-prefix", "big-write", "big-user")

_INGEST_CHUNK = 5000
_COLUMNS = (
    ("mode", "mode"),
    ("scenario", "scenario"),
    ("entries", "entries"),
    ("users", "users"),
    ("ingest/s", "ingest_per_s"),
    ("add p50 ms", "add_p50_ms"),
    ("rebuild p50 ms", "rebuild_p50_ms"),
    ("rebuild p95 ms", "rebuild_p95_ms"),
    ("cold p50 ms", "cold_p50_ms"),
    ("cold p95 ms", "cold_p95_ms"),
    ("warm p50 ms", "warm_p50_ms"),
    ("warm p95 ms", "warm_p95_ms"),
    ("similarity p50 ms", "similarity_p50_ms"),
    ("similarity p95 ms", "similarity_p95_ms"),
    ("similarity/warm", "ratio_similarity_over_warm"),
)


def _ms(samples: Sequence[float]) -> tuple[float, float]:
    """p50 and p95 of samples in seconds, in milliseconds."""
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered) * 1e3, p95 * 1e3


def _timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def _ingest(memory: OutputProfileMemory, records: Iterator[dict[str, Any]]) -> tuple[int, float]:
    """Write records with add_many in chunks; returns (count, seconds)."""
    count, seconds, chunk = 0, 0.0, []
    for record in records:
        chunk.append(record)
        if len(chunk) == _INGEST_CHUNK:
            seconds += _timed(lambda c=chunk: memory.add_many(c))  # type: ignore[misc]
            count, chunk = count + len(chunk), []
    if chunk:
        seconds += _timed(lambda: memory.add_many(chunk))
        count += len(chunk)
    return count, seconds


def _cold(
    client: Any, collection: str, users: Sequence[str], max_tokens: int, *, snapshots: bool
) -> list[float]:
    """Selects with no in-process read cache and a fresh token memo for every call.

    ``snapshots=False``: every call loads, ranks and packs the whole profile (the first read
    after a write). ``snapshots=True``: the profile is unchanged since it was last read, so
    the selection saved in the store serves it (every user is read once, untimed, first).
    """
    reader = OutputProfileMemory.from_client(
        client,
        collection_name=collection,
        reads=ReadOptions(cache_ttl_s=0, snapshot_ttl_s=3600 if snapshots else 0),
    )
    if snapshots:
        for user in set(users):
            reader.select(user, max_tokens=max_tokens)
    samples = []
    for user in users:
        reader.counter = reader.counter.fresh()  # a cold counter: no memoized counts
        samples.append(_timed(lambda u=user: reader.select(u, max_tokens=max_tokens).text))  # type: ignore[misc]
    return samples


def _warm(memory: OutputProfileMemory, users: Sequence[str], max_tokens: int) -> list[float]:
    """Selects served by the read cache (each user read once before timing)."""
    for user in set(users):
        memory.select(user, max_tokens=max_tokens)
    return [_timed(lambda u=u: memory.select(u, max_tokens=max_tokens).text) for u in users]  # type: ignore[misc]


def _similarity(
    client: Any, collection: str, users: Sequence[str], texts: Sequence[str], k: int
) -> list[float]:
    """LangChain's retriever-memory pattern: embed the query, search filtered by user, format."""
    handle = client.get_collection(collection)
    embedder = StyleEmbeddings()

    def one(user: str, text: str) -> str:
        vector = embedder.embed_query(text)
        hits = handle.query(
            query_embeddings=[vector], n_results=k, where={"user_id": user}, include=["metadatas"]
        )
        return "\n".join(json.loads(m[PAYLOAD_KEY])["text"] for m in hits["metadatas"][0])

    return [_timed(lambda u=u, t=t: one(u, t)) for u, t in zip(users, texts, strict=True)]  # type: ignore[misc]


def _add_latency(memory: OutputProfileMemory, user: str, repeats: int) -> list[float]:
    stamp = time.time_ns()
    return [
        _timed(lambda i=i: memory.add(f"Fresh single add {stamp}-{i}.", user_id=user))  # type: ignore[misc]
        for i in range(repeats)
    ]


def _scenario(
    client: Any,
    name: str,
    *,
    entries: int,
    users: int,
    repeats: int,
    rebuild_repeats: int,
    max_tokens: int,
    seed: int,
) -> dict[str, Any]:
    collection = f"bench-{name}-{time.time_ns()}"
    memory = OutputProfileMemory.from_client(
        client, collection_name=collection, reads=ReadOptions(cache_ttl_s=3600)
    )
    per_user = entries // users
    records = (r for u in range(users) for r in user_entries(u, per_user, seed=seed))
    count, seconds = _ingest(memory, records)
    picks = [user_name(i * 7919 % users) for i in range(repeats)]
    rebuilds = picks[: max(1, rebuild_repeats)]
    rebuild = _ms(_cold(client, collection, rebuilds, max_tokens, snapshots=False))
    cold = _ms(_cold(client, collection, picks, max_tokens, snapshots=True))
    warm = _ms(_warm(memory, picks, max_tokens))
    k = max(1, len(memory.select(picks[0], max_tokens=max_tokens).entries))
    similar = _ms(_similarity(client, collection, picks, queries(repeats, seed=seed), k))
    add = _ms(_add_latency(memory, picks[0], repeats))
    return {
        "scenario": name,
        "entries": count,
        "users": users,
        "ingest_s": round(seconds, 2),
        "ingest_per_s": round(count / seconds),
        "add_p50_ms": add[0],
        "add_p95_ms": add[1],
        "rebuild_p50_ms": rebuild[0],
        "rebuild_p95_ms": rebuild[1],
        "cold_p50_ms": cold[0],
        "cold_p95_ms": cold[1],
        "warm_p50_ms": warm[0],
        "warm_p95_ms": warm[1],
        "similarity_k": k,
        "similarity_p50_ms": similar[0],
        "similarity_p95_ms": similar[1],
        "ratio_similarity_over_warm": similar[0] / warm[0],
        "ratio_similarity_over_cold": similar[0] / cold[0],
    }


@contextmanager
def _client(mode: str, root: Path, server_rss: dict[str, float | None]) -> Iterator[Any]:
    if mode == "embedded":
        yield chromadb.PersistentClient(
            path=str(root / "embedded"), settings=Settings(anonymized_telemetry=False)
        )
        return
    with chroma_server(root / "server") as server:
        yield chromadb.HttpClient(host=server.host, port=server.port)
        server_rss["server_peak_rss_mb"] = server.peak_rss_mb()


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]] = _COLUMNS) -> str:
    def cell(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(title for title, _ in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[key]) for _, key in columns) + " |" for row in rows]
    return "\n".join(lines)


def bench_command(
    sizes: Annotated[
        list[int] | None,
        typer.Option(
            help="Entries of one user, one scenario each; repeat the option for more "
            "(default: 1000 and 10000; 0 skips)."
        ),
    ] = None,
    many_entries: Annotated[
        int, typer.Option(help="Entries of the many-users scenario (0 skips it).")
    ] = 20_000,
    many_users: Annotated[int, typer.Option(help="Users sharing that one collection.")] = 200,
    modes: Annotated[
        list[str] | None,
        typer.Option(
            help="embedded (a PersistentClient) and/or server (a `chroma run` it starts); "
            "repeat the option for both (default: both)."
        ),
    ] = None,
    repeats: Annotated[int, typer.Option(help="Timed calls per figure.")] = 30,
    rebuild_repeats: Annotated[
        int, typer.Option(help="Timed full rebuilds (seconds each at 100k entries).")
    ] = 10,
    max_tokens: Annotated[int, typer.Option(help="Block budget of every select.")] = 600,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic users and texts.")] = 0,
    out: Annotated[
        Path | None, typer.Option(help="Where the JSON goes (a plot goes beside it).")
    ] = Path("outprofile-bench.json"),
    scenario: Annotated[
        str,
        typer.Option(
            help="suite (ingest, add, rebuild, cold, warm, similarity), live-loop (tracked "
            "turns with feedback against a similarity memory), prompt-cache (a thread "
            "through ChatOpenAI and the local model server per block kind), shared-prefix "
            "(8 users taking turns under one static system prompt, the block first or after "
            "it), big-write (another user's reads during one add_many of --many-entries "
            "entries) or big-user (one user of --big-user-entries entries: first, cold and warm "
            "read, RSS, another user's reads and forget, each in a fresh process)."
        ),
    ] = "suite",
    turns: Annotated[int, typer.Option(help="Turns of each live loop or thread.")] = 30,
    big_user_entries: Annotated[
        int, typer.Option(help="Entries of the big-user scenario's one user.")
    ] = 200_000,
    big_user_repeats: Annotated[
        int, typer.Option(help="big-user: runs of each phase per tree (medians).")
    ] = 1,
    trees: Annotated[
        list[str] | None,
        typer.Option(
            help="big-user: source trees to compare, each put on PYTHONPATH for its phases "
            "(repeat the option; default: this install)."
        ),
    ] = None,
) -> dict[str, Any]:
    """Run the benchmark suite, print a markdown table, and write the numbers as JSON.

    Args:
        sizes: entries of one user, one scenario each (default 1000 and 10000; 0 skips).
        many_entries: entries of the many-users scenario (0 skips it), e.g. 1_000_000.
        many_users: users sharing that one collection, e.g. 10_000.
        modes: ``embedded`` (PersistentClient) and/or ``server`` (HttpClient to ``chroma run``);
            default both.
        repeats: timed calls per figure.
        rebuild_repeats: timed full rebuilds (seconds each at 100k entries).
        max_tokens: block budget of every select.
        seed: seed of the synthetic users and texts.
        out: where the JSON goes (None: not written).
        scenario: ``suite`` (ingest, add, rebuild, cold, warm, similarity), ``live-loop``
            (turns of a tracked chain with feedback against a similarity memory, and
            ``add_many`` against a raw upsert: ``bench/live_loop.py``) or ``prompt-cache``
            (a thread through ``ChatOpenAI`` and the local model server per block kind:
            ``bench/prompt_cache.py``; ``max_tokens`` is the block's budget, and a plot is
            written beside ``out``), ``shared-prefix`` (8 users taking turns on pinned
            threads under one ~1,000-token system prompt, block first vs after it:
            ``bench/shared_prefix.py``; ``max_tokens`` is the block's budget) or
            ``big-write`` (another user's reads, p50/p99, during one ``add_many`` of
            ``many_entries`` entries: ``bench/big_write.py``) or ``big-user`` (one user of
            ``big_user_entries`` entries: its first, cold and warm read, peak RSS, another
            user's reads and ``forget``, each in a fresh process: ``bench/big_user.py``;
            embedded only).
        turns: turns of each live loop or thread (shared-prefix: of each user).
        big_user_entries: entries of the big-user scenario's one user.
        big_user_repeats: big-user: runs of each phase per tree; the row holds medians.
        trees: big-user: source trees (each put on ``PYTHONPATH``) to run side by side.

    Example:
        ```python
        from outprofile_lab.bench.run import bench_command
        report = bench_command(sizes=[1000], many_entries=0, modes=["embedded"])
        ```
    """
    sizes = [n for n in (sizes or [1_000, 10_000]) if n > 0]
    modes = modes or ["embedded", "server"]
    unknown = set(modes) - {"embedded", "server"}
    if unknown:
        raise InvalidInputError(f"modes must be embedded and/or server; got {sorted(unknown)}")
    if many_entries and not 0 < many_users <= many_entries:
        raise InvalidInputError("many_users must be between 1 and many_entries")
    if scenario == "prompt-cache":
        return _prompt_cache(turns, max_tokens, seed, out)
    if scenario == "shared-prefix":
        return _shared_prefix(turns, max_tokens, seed, out)
    if scenario == "big-write":
        return _big_write(modes, many_entries, max_tokens, seed, out)
    if scenario == "big-user":
        return _big_user(big_user_entries, trees or [], big_user_repeats, max_tokens, seed, out)
    if scenario not in ("suite", "live-loop"):
        raise InvalidInputError(f"scenario must be one of {', '.join(SCENARIOS)}; got {scenario!r}")
    columns = _COLUMNS if scenario == "suite" else LIVE_LOOP_COLUMNS
    rows: list[dict[str, Any]] = []
    server_rss: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="outprofile-bench-") as tmp:
        for mode in modes:
            with _client(mode, Path(tmp), server_rss) as client:
                plan = [(f"one-user-{n}", n, 1) for n in sizes]
                if many_entries:
                    plan.append((f"many-users-{many_entries}", many_entries, many_users))
                for name, entries, users in plan:
                    if scenario == "suite":
                        row = _scenario(
                            client,
                            name,
                            entries=entries,
                            users=users,
                            repeats=repeats,
                            rebuild_repeats=rebuild_repeats,
                            max_tokens=max_tokens,
                            seed=seed,
                        )
                    else:
                        row = live_loop_scenario(
                            client,
                            name,
                            entries=entries,
                            users=users,
                            turns=turns,
                            max_tokens=max_tokens,
                            seed=seed,
                            ms=_ms,
                            compare_ingest=users == 1,
                        )
                    rows.append({"mode": mode, **row})
                    print(_table(rows[-1:], columns).splitlines()[-1], flush=True)
    report = {
        "rows": rows,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **server_rss,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "settings": {
            "scenario": scenario,
            "turns": turns,
            "repeats": repeats,
            "rebuild_repeats": rebuild_repeats,
            "max_tokens": max_tokens,
            "seed": seed,
        },
    }
    print(_table(rows, columns))
    print(
        f"\npeak RSS of this process: {report['peak_rss_mb']:.0f} MB"
        + (
            f"; chroma server: {server_rss['server_peak_rss_mb']:.0f} MB"
            if server_rss.get("server_peak_rss_mb")
            else ""
        )
    )
    if out is not None:
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
    return report


def _big_write(
    modes: Sequence[str], entries: int, max_tokens: int, seed: int, out: Path | None
) -> dict[str, Any]:
    """Another user's reads during one ``add_many`` of ``entries`` entries, per mode."""
    if entries <= 0:
        raise InvalidInputError("the big-write scenario needs --many-entries above 0")
    rows: list[dict[str, Any]] = []
    server_rss: dict[str, float | None] = {}
    with tempfile.TemporaryDirectory(prefix="outprofile-bench-") as tmp:
        for mode in modes:
            with _client(mode, Path(tmp), server_rss) as client:
                row = big_write_scenario(
                    client,
                    f"big-write-{entries}",
                    entries=entries,
                    max_tokens=max_tokens,
                    seed=seed,
                )
                rows.append({"mode": mode, **row})
                print(_table(rows[-1:], BIG_WRITE_COLUMNS).splitlines()[-1], flush=True)
    report = {
        "rows": rows,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "settings": {"scenario": "big-write", "max_tokens": max_tokens, "seed": seed},
    }
    print(_table(rows, BIG_WRITE_COLUMNS))
    if out is not None:
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
    return report


def _big_user(
    entries: int,
    trees: Sequence[str],
    repeats: int,
    max_tokens: int,
    seed: int,
    out: Path | None,
) -> dict[str, Any]:
    """One user of ``entries`` entries, every phase in a fresh process, per source tree."""
    if entries <= 0:
        raise InvalidInputError("the big-user scenario needs --user-entries above 0")
    rows = big_user_scenario(
        entries=entries,
        max_tokens=max_tokens,
        seed=seed,
        trees=list(trees) or [None],
        repeats=repeats,
    )
    report = {
        "rows": rows,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "settings": {
            "scenario": "big-user",
            "max_tokens": max_tokens,
            "seed": seed,
            "repeats": repeats,
        },
    }
    print(_table(rows, BIG_USER_COLUMNS))
    if out is not None:
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
    return report


def _prompt_cache(turns: int, block_tokens: int, seed: int, out: Path | None) -> dict[str, Any]:
    report = prompt_cache_command(
        turns=turns,
        block_tokens=block_tokens,
        seed=seed,
        plot=None if out is None else out.with_suffix(".png"),
    )
    report["machine"] = {"python": platform.python_version(), "platform": platform.platform()}
    lines = ["| condition | first turn ms | TTFT median ms | TTFT max ms | evaluated median |"]
    lines.append("|---|---|---|---|---|")
    for condition, row in report["summary"].items():
        lines.append(
            f"| {condition} | {row['first_turn_ttft_ms']:.1f} | {row['ttft_median_ms']:.1f} "
            f"| {row['ttft_max_ms']:.1f} | {row['evaluated_median']:.0f} |"
        )
    print("\n".join(lines))
    print(json.dumps(report["targets"], indent=2))
    if out is not None:
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out} and {out.with_suffix('.png')}")
    return report


def _shared_prefix(turns: int, block_tokens: int, seed: int, out: Path | None) -> dict[str, Any]:
    report = shared_prefix_command(turns=turns, block_tokens=block_tokens, seed=seed)
    report["machine"] = {"python": platform.python_version(), "platform": platform.platform()}
    print(shared_prefix_table(report["summary"]))
    if out is not None:
        out.write_text(json.dumps(report, indent=2))
        print(f"wrote {out}")
    return report


def shared_prefix_table(summary: dict[str, dict[str, float]]) -> str:
    """The shared-prefix summary as a markdown table, one row per condition.

    Example:
        ```python
        print(shared_prefix_table(report["summary"]))
        ```
    """
    lines = [
        "| condition | requests | prompt tokens evaluated: median / total | reused median "
        "| TTFT median / max ms |",
        "|---|---|---|---|---|",
    ]
    for condition, row in summary.items():
        lines.append(
            f"| {condition} | {row['requests']:.0f} | {row['evaluated_median']:.0f} / "
            f"{row['evaluated_total']:.0f} | {row['reused_median']:.0f} | "
            f"{row['ttft_median_ms']:.1f} / {row['ttft_max_ms']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry: ``python -m outprofile_lab.bench --sizes 1000,10000``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes", default="1000,10000", help="one-user sizes, comma separated; 0 skips"
    )
    parser.add_argument("--many-entries", type=int, default=20_000, help="0 skips the scenario")
    parser.add_argument("--many-users", type=int, default=200)
    parser.add_argument("--modes", default="embedded,server")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rebuild-repeats", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("outprofile-bench.json"))
    parser.add_argument("--scenario", default="suite", choices=SCENARIOS)
    parser.add_argument("--turns", type=int, default=30, help="turns of each live loop")
    parser.add_argument("--big-user-entries", type=int, default=200_000)
    parser.add_argument("--big-user-repeats", type=int, default=1)
    parser.add_argument("--trees", default="", help="big-user: source trees, comma separated")
    args = parser.parse_args(argv)
    bench_command(
        sizes=[int(s) for s in args.sizes.split(",") if s] or [0],
        many_entries=args.many_entries,
        many_users=args.many_users,
        modes=args.modes.split(","),
        repeats=args.repeats,
        rebuild_repeats=args.rebuild_repeats,
        max_tokens=args.max_tokens,
        seed=args.seed,
        out=args.out,
        scenario=args.scenario,
        turns=args.turns,
        big_user_entries=args.big_user_entries,
        big_user_repeats=args.big_user_repeats,
        trees=[t for t in args.trees.split(",") if t],
    )


if __name__ == "__main__":
    main()
