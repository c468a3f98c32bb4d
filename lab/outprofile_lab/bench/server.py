"""Start and stop a real ``chroma run`` server on a free loopback port for the benchmarks."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ChromaServer", "chroma_server"]


@dataclass
class ChromaServer:
    """A running server: where it listens and its process (for its peak RSS)."""

    host: str
    port: int
    process: subprocess.Popen[bytes]

    def peak_rss_mb(self) -> float | None:
        """The server's peak resident set size (VmHWM), while it still runs."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chroma run exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"chroma server at {url} did not answer /api/v2/heartbeat")


@contextmanager
def chroma_server(data_dir: Path) -> Iterator[ChromaServer]:
    """Run ``chroma run --path data_dir`` on a free loopback port until the block exits.

    Example:
        ```python
        with chroma_server(Path("/tmp/bench")) as server:
            client = chromadb.HttpClient(host=server.host, port=server.port)
        ```
    """
    binary = shutil.which("chroma")
    if binary is None:
        raise RuntimeError("the `chroma` command (from the chromadb package) is not on PATH")
    port = _free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / "server.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                "run",
                "--path",
                str(data_dir / "data"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait(f"http://127.0.0.1:{port}", process)
            yield ChromaServer("127.0.0.1", port, process)
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
