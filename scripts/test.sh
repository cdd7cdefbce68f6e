#!/usr/bin/env bash
# The whole test suite: installs what it needs, then runs every test of the project.
# Nothing is skipped silently: a step that cannot run fails and says why.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# Each step prints the time since the start, so that a CI log shows where its minutes went.
# With it, how busy the cores were since the previous step (from /proc/stat): a step with
# idle cores is where background work (the anchors below) gets done for free.
started=$SECONDS
cpu_busy=0 cpu_total=0
step() {
  local _cpu user nice system idle iowait irq softirq steal _rest busy total usage=''
  read -r _cpu user nice system idle iowait irq softirq steal _rest </proc/stat
  busy=$((user + nice + system + irq + softirq + steal))
  total=$((busy + idle + iowait))
  if ((cpu_total > 0 && total > cpu_total)); then
    usage=" (cores $((100 * (busy - cpu_busy) / (total - cpu_total)))% busy since the last step)"
  fi
  cpu_busy=$busy cpu_total=$total
  printf '\n==> [%dm%02ds] %s%s\n' $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)) \
    "$*" "$usage" >&2
}

step "format"
cargo fmt --all -- --check
cargo fmt --manifest-path benches/anchors/Cargo.toml -- --check

# Background work: the benchmark anchors (benches/anchors, their own workspace:
# gst-plugin-webrtc from crates.io) are built and linted, then this workspace is linted, at
# the lowest CPU priority beside the build and the tests, which leave a core idle much of
# the time (linking, calls that run in real time). On a clean clone (2026-12-03) the
# anchors were done 22 minutes in, before the Rust tests ended; run in line the anchors took
# 5 minutes of a CI run and the workspace lints 2m21s. The workspace lints share the
# anchors' target dir (the two lockfiles have 237 crate versions in common; how many of their
# check results the lints reuse was not measured: features can differ). The quick
# benchmarks, last, wait for all of it: on a clean clone of eda50a2 the lints were still
# compiling 29.5 minutes in, so there part of the 2m21s came back as a wait.
#
# It runs in a session of its own, so that a failing step can stop it with every rustc it
# started. On a kernel with autogroup scheduling (Debian's, and CI's) a new session is a
# scheduling group of its own, and a process's nice value then ranks it only within its
# group: `nice -n 19` alone left the anchors half of the cores against the cold build, which
# cost a CI run about 7 minutes (stop 27: 46 minutes). The group's own nice value
# (/proc/self/autogroup, sched(7)) is what puts it behind the build and the tests.
mkdir -p target
background_log=target/background-build.log
anchors_target="${CARGO_TARGET_DIR:-$PWD/target}/anchors"
CARGO_TARGET_DIR="$anchors_target" setsid -w bash -c '
  if [ -w /proc/self/autogroup ]; then echo 19 >/proc/self/autogroup; fi
  exec nice -n 19 bash -c "
    cargo build --locked --manifest-path benches/anchors/Cargo.toml &&
      cargo clippy --locked --manifest-path benches/anchors/Cargo.toml --all-targets -- -D warnings &&
      cargo clippy --locked --workspace --all-targets -- -D warnings
  "
' >"$background_log" 2>&1 &
background_pid=$!
# The browser tests' npm packages download meanwhile too (network, not CPU).
npm_log=target/npm-ci.log
npm_pid=
if [ -f tests/browser/package.json ]; then
  PUPPETEER_SKIP_DOWNLOAD=1 npm --prefix tests/browser ci --no-audit --no-fund >"$npm_log" 2>&1 &
  npm_pid=$!
fi
# A step that fails stops the suite: do not leave these running behind it.
trap 'kill -- -"$background_pid" ${npm_pid:+"$npm_pid"} 2>/dev/null || true' EXIT

# meson builds the plugin and the runner through cargo (sharing target/).
step "meson build"
builddir=target/meson
if [ ! -f "$builddir/build.ninja" ]; then
  meson setup "$builddir" --buildtype=debug -Dcargo-target-dir="$PWD/target"
fi
meson compile -C "$builddir"

# meson checks the version and gst-inspect, and runs every Rust test (cargo nextest, see
# scripts/meson-cargo.py), the real calls among them, each in a private network namespace
# it makes itself.
step "Rust tests through meson test"
meson test -C "$builddir" --verbose

if [ -f tests/browser/package.json ]; then
  step "browser tests (headless Chromium and Firefox ESR)"
  if ! wait "$npm_pid"; then
    cat "$npm_log" >&2
    echo "test.sh: npm ci of tests/browser failed (above)" >&2
    exit 1
  fi
  npm --prefix tests/browser test
fi

step "background work: the anchors' build and lints, the workspace's lints (started beside the build)"
if ! wait "$background_pid"; then
  cat "$background_log" >&2
  echo "test.sh: the benchmark anchors did not build, or the anchors or this workspace have lint errors (above)" >&2
  exit 1
fi
tail -n 3 "$background_log" >&2

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

step "done"
