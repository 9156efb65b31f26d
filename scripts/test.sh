#!/usr/bin/env bash
# Cohort's test steps: build, Rust tests, then the SDK/client tests against the
# real binary. Expects the toolchains and client deps installed (see .ci/run).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

section() { printf '\n==================== %s ====================\n' "$*"; }

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/cohort/target}"
VENV="${COHORT_VENV:-$HOME/.cache/cohort/venv}"
# Rust tests that start a Python component (the SMTP sink) find it here.
export COHORT_VENV="$VENV"

section "cargo fmt --check"
# The lints and the formatting are part of the test: a change that breaks either does not land.
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi
cargo fmt --all --check

section "cargo build --workspace --all-targets (debug)"
# One build with the features the tests use, so nextest reuses it instead of building again.
cargo build --workspace --all-targets
export COHORT_BIN="$CARGO_TARGET_DIR/debug/cohort"
[ -x "$COHORT_BIN" ] || { echo "ERROR: $COHORT_BIN was not built" >&2; exit 1; }

section "cargo clippy --workspace --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

section "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
    # --no-tests=warn: a workspace without tests is not a failure here.
    cargo nextest run --workspace --no-tests=warn --no-fail-fast
else
    cargo test --workspace
fi

section "Client/SDK tests (pytest tests/clients)"
if [ -x "$VENV/bin/python" ]; then
    PY="$VENV/bin/python"
else
    PY=python3
fi
set +e
"$PY" -m pytest -q -rfE tests/clients "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "ERROR: pytest collected no tests in tests/clients" >&2
fi
if [ "$rc" -ne 0 ]; then
    echo "FAILED: pytest exited with $rc" >&2
    exit "$rc"
fi

section "All tests passed"
