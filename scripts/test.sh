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

# The call benchmark's quick mode: a few calls of each scenario, ours and the webrtcsink
# anchor's, so that the benchmark never rots. It fails when a figure is missing, never on
# the figures' values. (The anchor's first build, unoptimized, takes under 2 minutes on 2 cores.)
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

# The anchors are their own workspace (gst-plugin-webrtc): linted here, after the quick
# benchmark built them unoptimized (the lints reuse that build's build scripts and
# proc-macros; the check build of the dependencies takes about a minute and a half more).
step "benchmark anchors: format and lints"
cargo fmt --manifest-path benches/anchors/Cargo.toml -- --check
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}/anchors" \
  cargo clippy --locked --manifest-path benches/anchors/Cargo.toml --all-targets -- -D warnings

if [ -f tests/browser/package.json ]; then
  step "browser tests (headless Chromium and Firefox ESR)"
  PUPPETEER_SKIP_DOWNLOAD=1 npm --prefix tests/browser ci --no-audit --no-fund
  npm --prefix tests/browser test
fi

step "done"
