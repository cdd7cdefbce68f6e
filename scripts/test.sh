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
cpu_since_last_step() {
  local _cpu user nice system idle iowait irq softirq steal rest busy total
  read -r _cpu user nice system idle iowait irq softirq steal rest </proc/stat
  busy=$((user + nice + system + irq + softirq + steal))
  total=$((busy + idle + iowait))
  if ((total > cpu_total)); then
    printf 'cores %d%% busy' $((100 * (busy - cpu_busy) / (total - cpu_total)))
  fi
  cpu_busy=$busy cpu_total=$total
}
step() {
  printf '\n==> [%dm%02ds] %s (since the last step: %s)\n' $(((SECONDS - started) / 60)) \
    $(((SECONDS - started) % 60)) "$*" "$(cpu_since_last_step)" >&2
}

step "format"
cargo fmt --all -- --check
cargo fmt --manifest-path benches/anchors/Cargo.toml -- --check

# The benchmark anchors (benches/anchors, their own workspace: gst-plugin-webrtc from
# crates.io) are built and linted at the lowest CPU priority beside the build and the tests,
# which leave a core idle much of the time (linking, calls that run in real time). Run in
# line after the tests, they took 5 of a CI run's 38 minutes; in idle time they cost
# nothing. The quick benchmarks, last, wait for them.
#
# They run in a session of their own, so that a failing step can stop them with every rustc
# they started. On a kernel with autogroup scheduling (Debian's, and CI's) a new session is
# a scheduling group of its own, and a process's nice value then ranks it only within its
# group: `nice -n 19` alone left the anchors half of the cores against the cold build, which
# cost a CI run about 7 minutes (stop 27: 46 minutes). The group's own nice value
# (/proc/self/autogroup, sched(7)) is what puts them behind the build and the tests.
mkdir -p target
anchors_log=target/anchors-build.log
anchors_target="${CARGO_TARGET_DIR:-$PWD/target}/anchors"
CARGO_TARGET_DIR="$anchors_target" setsid -w bash -c '
  if [ -w /proc/self/autogroup ]; then echo 19 >/proc/self/autogroup; fi
  exec nice -n 19 bash -c "
    cargo build --locked --manifest-path benches/anchors/Cargo.toml &&
      cargo clippy --locked --manifest-path benches/anchors/Cargo.toml --all-targets -- -D warnings
  "
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

if [ -f tests/browser/package.json ]; then
  step "browser tests (headless Chromium and Firefox ESR)"
  if ! wait "$npm_pid"; then
    cat "$npm_log" >&2
    echo "test.sh: npm ci of tests/browser failed (above)" >&2
    exit 1
  fi
  npm --prefix tests/browser test
fi


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

step "done"
