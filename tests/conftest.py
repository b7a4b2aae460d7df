"""Shared fixtures: seeded random data (never time-seeded), servers on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest

import tqsearch


def run_threads(writers: list[threading.Thread], readers: list[threading.Thread], stop: threading.Event) -> None:
    """Start everyone, wait for the writers, then stop and wait for the readers."""
    for t in writers + readers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    for t in readers:
        t.join()


def run_child(code: str, *args: str, timeout: float = 300) -> list[str]:
    """Runs `code` in a fresh interpreter (signals sent there cannot reach pytest) and returns the words it printed."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def int8_estimate(rq: np.ndarray, idx: np.ndarray, centroids: np.ndarray, bits: int) -> np.ndarray:
    """<q', c[idx]> as the int8 scans of scorer.h compute it, in numpy: (nq, n) for rotated queries rq (nq, dim) and
    code indices idx (n, dim). 4 bits: u8 values 128 + round(127 c / max|c|), |q| <= 63; 8 bits: values
    W + round(W c / max|c|), W = min(4095, 2^31 // (254 dim + 1)), |q| <= 127."""
    c = centroids.astype(np.float64)
    cmax = np.abs(c).max()
    dim = idx.shape[1]
    steps = min(4095, 2**31 // (2 * 127 * dim + 1)) if bits == 8 else 127
    zero, reach = (steps, 127) if bits == 8 else (128, 63)
    table = zero + np.rint(steps * c / cmax)
    s = reach / np.abs(rq).max(axis=1, keepdims=True)
    q = np.rint(rq * s)
    dots = q @ table[idx].T - zero * q.sum(axis=1, keepdims=True)
    return dots * (np.float32(cmax / steps) / s)


def unit_rows(n: int, dim: int, seed: int) -> np.ndarray:
    """n random unit vectors in R^dim (uniform on the sphere)."""
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def split_scans():
    """Flat scans start a thread per byte of work, so threads=2 splits even a small index's codes into ranges whose
    top-k are merged (by default a search starts a thread per few MB of codes)."""
    previous = tqsearch._core.set_thread_bytes(1)
    yield
    tqsearch._core.set_thread_bytes(previous)


@pytest.fixture(params=tqsearch.available_simd_levels())
def simd(request) -> str:
    """Every kernel set this CPU can run."""
    return request.param


class Server:
    """A `tqsearch serve` child process on a free loopback port (the real uvicorn, not a test client)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen([sys.executable, "-m", "tqsearch", "serve", *args, "--port", str(port)],
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                        env={**os.environ, **(env or {})})
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server did not start: {self.process.stdout.read()}")

    def stop(self) -> int:
        """SIGTERM (a graceful shutdown) and the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        finally:
            self.process.stdout.close()


@pytest.fixture
def start_server():
    """Start `tqsearch serve ARGS...` servers; any still running are stopped at the end of the test."""
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    servers: list[Server] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Server:
        servers.append(Server(*args, env=env))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
