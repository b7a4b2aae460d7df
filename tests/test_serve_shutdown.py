"""`tqsearch serve --demo` stopped by SIGTERM or Ctrl-C removes its temporary directory."""

import os
import signal
import subprocess
import sys

import pytest

SIGNALS = pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])


@SIGNALS
def test_stop_signal_removes_the_demo_directory(start_server, tmp_path, sig):
    server = start_server("--demo", env={"TMPDIR": str(tmp_path)})
    demo_dirs = list(tmp_path.glob("tqsearch-demo-*"))
    assert len(demo_dirs) == 1 and (demo_dirs[0] / "wordnet").is_dir()
    server.process.send_signal(sig)
    status = server.process.wait(60)
    assert list(tmp_path.iterdir()) == []
    assert status == 0  # a requested stop, done cleanly


@SIGNALS
def test_stop_signal_while_building_the_demo_removes_it_quietly(tmp_path, sig):
    pytest.importorskip("uvicorn")
    process = subprocess.Popen([sys.executable, "-m", "tqsearch", "serve", "--demo", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        first = process.stdout.readline()
        demo_dirs = list(tmp_path.glob("tqsearch-demo-*"))
        process.send_signal(sig)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert first.startswith("building collection 'wordnet'") and len(demo_dirs) == 1
    assert list(tmp_path.iterdir()) == []
    assert (process.returncode, output) == (130, "")  # 128 + SIGINT: interrupted, and no traceback
