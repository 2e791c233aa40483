#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (a Python venv with
# the real upstream apps and independent clients), then formatting, lints, Rust tests, and the
# Python integration tests against the freshly built binary.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${FIELDSEAL_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    # Debian's system Python ships venv separately.
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt
if ! command -v redis-server >/dev/null || ! command -v nginx >/dev/null; then
  # The replica tests run Debian's redis-server (the shared replay store) and nginx (the load
  # balancer in front of three fieldseal processes), both started by the tests on loopback.
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server nginx >/dev/null
fi
if ! command -v age >/dev/null || ! command -v ssh-keygen >/dev/null; then
  # File sealing (`fieldseal file`) is checked against the reference age implementation (Go),
  # with X25519 identities and SSH keys made by ssh-keygen.
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age openssh-client >/dev/null
fi
if [ ! -x /usr/bin/chromium ]; then
  # The browser client test drives Debian's chromium with playwright (no browser download).
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi

echo "== Dockerfile (hadolint; the image itself needs a Docker engine CI does not have)"
VENV="$VENV" scripts/check-dockerfile.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings
echo "== cargo test"
cargo test --all-targets
echo "== fuzz targets and seed tools compile (running them: scripts/fuzz-smoke.sh, outside the suite)"
# The fuzz workspace is not part of the crate's build, so nothing else notices when a change
# to the library breaks a target (three had, unnoticed, until this check).
cargo check --manifest-path fuzz/Cargo.toml --bins --examples --quiet
echo "== pytest (FastAPI, Flask, httpx)"
cargo build --bin fieldseal
echo "== Helm chart (lint, template, manifest validation, fieldseal check of the rendered config)"
CHECK_CHART_REQUIRE_FIELDSEAL=1 FIELDSEAL_BIN="$PWD/target/debug/fieldseal" VENV="$VENV" scripts/check-chart.sh
export FIELDSEAL_REQUIRE_BROWSER=1  # a missing browser fails the browser tests instead of skipping them
FIELDSEAL_BIN="$PWD/target/debug/fieldseal" "$VENV/bin/python" -m pytest -q tests/python
