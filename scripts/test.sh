#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every test of the project.
# Nothing is skipped silently: a step that cannot run fails and says why.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# Each step prints the time since the start, so that a CI log shows where its minutes went.
started=$SECONDS
step() { printf '\n==> [%dm%02ds] %s\n' $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)) "$*" >&2; }

step "format"
cargo fmt --all -- --check
cargo fmt --manifest-path benches/anchors/Cargo.toml -- --check

# The benchmark anchors (benches/anchors, their own workspace: gst-plugin-webrtc from
# crates.io) are built and linted at the lowest CPU priority beside the build and the tests,
# which leave a core idle much of the time (linking, calls that run in real time). Run in
# line after the tests, they took 5 of a CI run's 38 minutes; in their idle time they cost
# nearly nothing, and nice 19 keeps the tests' calls first on the cores. The quick
# benchmark waits for them. (The lints reuse this build's build scripts and proc-macros.)
mkdir -p target
anchors_log=target/anchors-build.log
anchors_target="${CARGO_TARGET_DIR:-$PWD/target}/anchors"
# In a session of its own, so that a failing step can stop it with every rustc it started.
CARGO_TARGET_DIR="$anchors_target" setsid -w nice -n 19 bash -c '
  cargo build --locked --manifest-path benches/anchors/Cargo.toml &&
    cargo clippy --locked --manifest-path benches/anchors/Cargo.toml --all-targets -- -D warnings
' >"$anchors_log" 2>&1 &
anchors_pid=$!
# The browser tests' npm packages download meanwhile too (network, not CPU).
npm_log=target/npm-ci.log
npm_pid=
if [ -f tests/browser/package.json ]; then
  PUPPETEER_SKIP_DOWNLOAD=1 npm --prefix tests/browser ci --no-audit --no-fund >"$npm_log" 2>&1 &
  npm_pid=$!
fi
# A step that fails stops the suite: do not leave these running behind it.
trap 'kill -- -"$anchors_pid" ${npm_pid:+"$npm_pid"} 2>/dev/null || true' EXIT

# meson builds the plugin and the runner through cargo (sharing target/).
step "meson build"
builddir=target/meson
if [ ! -f "$builddir/build.ninja" ]; then
  meson setup "$builddir" --buildtype=debug -Dcargo-target-dir="$PWD/target"
fi
meson compile -C "$builddir"

# After the build: the lints reuse its build scripts and proc-macros (measured on the
# anchors' lints below, on a clean clone: 98 s after their build against 131 s alone).
step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

# meson checks the version and gst-inspect, and runs `cargo test --workspace`: every Rust
# test, the real calls among them, each in a private network namespace it makes itself.
step "Rust tests through meson test"
meson test -C "$builddir" --verbose

step "benchmark anchors: build and lints (started beside the build)"
if ! wait "$anchors_pid"; then
  cat "$anchors_log" >&2
  echo "test.sh: the benchmark anchors did not build or have lint errors (above)" >&2
  exit 1
fi
tail -n 3 "$anchors_log" >&2

# The call benchmark's quick mode: a few calls of each scenario, ours and the webrtcsink
# anchor's, so that the benchmark never rots. It fails when a figure is missing, never on
# the figures' values.
step "benchmark, quick mode"
scripts/bench.sh --quick --out target/bench-quick
# The density benchmark's quick mode (~30 s): one echo runner with 1 and 2 callers at 240p,
# webrtcsink with 1 and 2 consumers, every figure present (docs/benchmarks.md, "Density").
step "density benchmark, quick mode"
scripts/bench.sh --density --quick --out target/bench-quick

# The shaped-network benchmark's quick mode: ours and the webrtcsink anchor on the 250 kbit/s
# link, 8 s calls in namespaces of their own (about 40 s); figures present, values not judged.
step "shaped-network benchmark, quick mode"
scripts/bench.sh --network --quick --out target/bench-quick

if [ -f tests/browser/package.json ]; then
  step "browser tests (headless Chromium and Firefox ESR)"
  if ! wait "$npm_pid"; then
    cat "$npm_log" >&2
    echo "test.sh: npm ci of tests/browser failed (above)" >&2
    exit 1
  fi
  npm --prefix tests/browser test
fi

step "done"
