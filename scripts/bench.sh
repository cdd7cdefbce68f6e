#!/usr/bin/env bash
# Call benchmarks side by side with the anchors (docs/benchmarks.md, "Calls").
#
#   scripts/bench.sh [--quick] [--no-anchor] [--chromium] [--out DIR]
#
# Builds benches/call-bench (a workspace member; release, or with --quick the debug build
# that the test suite already made) and, unless --no-anchor, the webrtcsink anchor
# (benches/anchors, its own workspace: gst-plugin-webrtc from crates.io, a long first build),
# and, with --chromium, the Chromium <-> Chromium anchor (benches/chromium/anchor.mjs: our browser
# SDK in headless Chromium through our server; needs node, /usr/bin/chromium, npm ci in
# tests/browser, done here when missing), then runs every scenario inside a private network namespace (needs root) and prints the
# table; writes DIR/results.json, DIR/table.md and DIR/plot.svg (DIR defaults to bench-out).
# --quick: 3 calls and a 3 s call per scenario, for CI. Fails (non-zero) when a scenario fails
# or a figure is missing; never on the figures' values.
# Target dirs: the workspace's (target/, or $CARGO_TARGET_DIR) and target/anchors for the anchor.
set -euo pipefail
cd "$(dirname "$0")/.."

anchor=1
chromium=0
profile=release
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) args+=(--quick); profile=debug ;;
    --no-anchor) anchor=0 ;;
    --chromium) chromium=1 ;;
    --out) args+=(--out "$2"); shift ;;
    *) echo "usage: scripts/bench.sh [--quick] [--no-anchor] [--chromium] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done

target=${CARGO_TARGET_DIR:-$PWD/target}
step() { printf '\n==> %s\n' "$*" >&2; }

step "build call-bench ($profile)"
if [ "$profile" = release ]; then
  cargo build --locked --release -p wilddog-call-bench
else
  cargo build --locked -p wilddog-call-bench
fi

if [ "$anchor" = 1 ]; then
  step "build the webrtcsink anchor (release; gst-plugin-webrtc 0.15 from crates.io)"
  if ! CARGO_TARGET_DIR="$target/anchors" cargo build --release --manifest-path benches/anchors/Cargo.toml; then
    echo "bench.sh: the webrtcsink anchor did not build (see above); --no-anchor runs without it" >&2
    exit 1
  fi
  args+=(--anchor-bin "$target/anchors/release/webrtcsink-anchor")
fi

if [ "$chromium" = 1 ]; then
  step "Chromium anchor: tests/browser dependencies"
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    npm --prefix tests/browser ci --no-audit --no-fund
  fi
  args+=(--chromium-script benches/chromium/anchor.mjs)
fi

step "run (private network namespace)"
exec "$target/$profile/call-bench" "${args[@]}"
