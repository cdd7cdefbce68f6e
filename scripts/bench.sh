#!/usr/bin/env bash
# Call benchmarks side by side with the anchors (docs/benchmarks.md, "Calls").
#
#   scripts/bench.sh [--quick] [--no-anchor] [--chromium] [--out DIR]
#   scripts/bench.sh --network [--quick] [--no-anchor] [--chromium] [--out DIR] [-- call-bench args]
#                               # the same calls on shaped links (docs/benchmarks.md, "Shaped networks")
#   scripts/bench.sh --server   # only the signaling servers: ours against gst-webrtc-signalling-server
#   scripts/bench.sh --server --nodes 3   # ours as 1 and as 3 nodes on Redis (bench_cluster)
#   scripts/bench.sh --density [--quick] [--no-anchor] [--dims 480p,240p] [--counts 1,2,4,8,16]
#                    [--max-calls N] [--window-secs S] [--no-bisect] [--out DIR]
#                    [--scenarios wilddog,wilddog-one-way,webrtcsink]
#       calls per machine: one echo runner with N concurrent callers against webrtcsink with
#       N webrtcsrc consumers, each caller/consumer a process (docs/benchmarks.md, "Density");
#       writes DIR/density.json and DIR/density.md. --quick: 240p, N = 1 and 2, 3 s windows.
#
# Builds benches/call-bench (a workspace member; release, or with --quick the debug build
# that the test suite already made) and, unless --no-anchor, the webrtcsink anchor
# (benches/anchors, its own workspace: gst-plugin-webrtc from crates.io, a long first build;
# with --quick unoptimized, as call-bench, into target/anchors/debug),
# and, with --chromium, the Chromium <-> Chromium anchor (benches/chromium/anchor.mjs: our browser
# SDK in headless Chromium through our server; needs node, /usr/bin/chromium, npm ci in
# tests/browser, done here when missing), then runs every scenario inside a private network namespace (needs root) and prints the
# table; writes DIR/results.json, DIR/table.md and DIR/plot.svg (DIR defaults to bench-out).
# --quick: 3 calls and a 3 s call per scenario, for CI. Fails (non-zero) when a scenario fails
# or a figure is missing; never on the figures' values.
# --network: every scenario on every link (tc tbf caps of 2 Mbit/s, 500 and 250 kbit/s; nft
# random loss of 1, 3 and 5 %; a step 2 Mbit/s -> 300 kbit/s -> 2 Mbit/s; a clean reference),
# each (scenario, link) in a private namespace of its own, two at a time, 30 s calls; writes
# DIR/network.json, network.md, network-step.svg. With --quick: the 250 kbit/s link, 8 s
# calls, ours and (unless --no-anchor) webrtcsink: what CI runs. Arguments after `--` go to
# call-bench (e.g. `-- --links step,loss3 --jobs 1`).
# Target dirs: the workspace's (target/, or $CARGO_TARGET_DIR) and target/anchors for the anchor.
set -euo pipefail
cd "$(dirname "$0")/.."

anchor=1
chromium=0
server=0
nodes=0
network=0
density=0
profile=release
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) args+=(--quick); profile=debug ;;
    --no-anchor) anchor=0 ;;
    --chromium) chromium=1 ;;
    --server) server=1 ;;
    --nodes) nodes="$2"; shift ;;
    --network) network=1; args+=(--network) ;;
    --out) args+=(--out "$2"); shift ;;
    --) shift; args+=("$@"); break ;;
    --density) density=1 ;;
    --dims|--counts|--max-calls|--window-secs)
      [ "$density" = 1 ] || { echo "bench.sh: $1 is for --density (put --density first)" >&2; exit 2; }
      args+=("$1" "$2"); shift ;;
    --no-bisect) args+=(--no-bisect) ;;
    --scenarios) args+=("$1" "$2"); shift ;;
    *) echo "usage: scripts/bench.sh [--network] [--quick] [--no-anchor] [--chromium] [--out DIR] [-- call-bench args] | --server [--nodes N] | --density [--quick] [--no-anchor] [--dims 480p,240p] [--counts 1,2,4] [--max-calls N] [--window-secs S] [--no-bisect] [--scenarios S,...] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done

target=${CARGO_TARGET_DIR:-$PWD/target}
step() { printf '\n==> %s\n' "$*" >&2; }

# --server: only our signaling server against gst-webrtc-signalling-server, one load generator
# (docs/benchmarks.md, "Against gst-webrtc-signalling-server"); 2,000 idle, 50 pairs, 5 s.
# --server --nodes N: our server in cluster mode on a local redis-server, as one node and as N
# nodes (signaling/server/examples/bench_cluster.rs): memory per idle connection, relayed
# frames/s, p50/p99 at 10,000 frames/s same node and cross node, CPU per frame, resume time
# after a node is killed (docs/benchmarks.md, "Several nodes on Redis").
if [ "$server" = 1 ] && [ "$nodes" -gt 0 ]; then
  command -v redis-server >/dev/null || { echo "bench.sh: redis-server missing (scripts/install-deps.sh)" >&2; exit 1; }
  step "build the cluster benchmark (release)"
  cargo build --locked --release -p wilddog-server --example bench_cluster
  step "one node without Redis (the same measurements, to compare with)"
  RUST_LOG=warn "$target/release/examples/bench_cluster" 0 10000 50 5
  step "one node on Redis"
  RUST_LOG=warn "$target/release/examples/bench_cluster" 1 10000 50 5
  step "$nodes nodes on Redis"
  RUST_LOG=warn "$target/release/examples/bench_cluster" "$nodes" 10000 50 5
  exit 0
fi
if [ "$server" = 1 ]; then
  step "build wilddog-runner and the server-load anchors (release)"
  cargo build --locked --release -p wilddog-runner
  CARGO_TARGET_DIR="$target/anchors" cargo build --release --manifest-path benches/anchors/Cargo.toml \
    --bin server-load --bin signalling-server-anchor
  load="$target/anchors/release/server-load"
  step "ours: wilddog-runner serve"
  "$load" --protocol wilddog --addr 127.0.0.1:19301 --idle 2000 --pairs 50 --seconds 5 \
    --app-id server-load --secret server-load-bench-secret-not-for-deployment \
    -- env RUST_LOG=warn "$target/release/wilddog-runner" serve --listen 127.0.0.1:19301 \
    --config benches/anchors/server-load-wilddog.toml
  step "anchor: gst-webrtc-signalling-server"
  WEBRTCSINK_SIGNALLING_SERVER_LOG=error "$load" --protocol gst --addr 127.0.0.1:19302 \
    --idle 2000 --pairs 50 --seconds 5 -- "$target/anchors/release/signalling-server-anchor" 19302
  exit 0
fi

step "build call-bench ($profile)"
# The runner too, in every mode: the density run needs it (the echo bot under test), and with
# it the dependencies get the features they have in the runner's build (`log` with `std`,
# through tracing-subscriber): built alone, call-bench rebuilt rustls, hyper, axum, the
# server and the plugin with other features, 1m51s of CI's 35 minutes on a clean clone.
build=(-p wilddog-call-bench -p wilddog-runner)
if [ "$profile" = release ]; then
  cargo build --locked --release "${build[@]}"
else
  cargo build --locked "${build[@]}"
fi

if [ "$anchor" = 1 ]; then
  # --quick (CI) builds the anchor unoptimized, like call-bench: its media work is GStreamer's
  # C code, its figures are not judged there, and the build takes 100 s instead of 350 s on
  # 2 cores. Measurements use the release build.
  step "build the webrtcsink anchor ($profile; gst-plugin-webrtc 0.15 from crates.io)"
  anchor_build=(cargo build --locked --manifest-path benches/anchors/Cargo.toml)
  [ "$profile" = release ] && anchor_build+=(--release)
  if ! CARGO_TARGET_DIR="$target/anchors" "${anchor_build[@]}"; then
    echo "bench.sh: the webrtcsink anchor did not build (see above); --no-anchor runs without it" >&2
    exit 1
  fi
  args+=(--anchor-bin "$target/anchors/$profile/webrtcsink-anchor")
fi

if [ "$chromium" = 1 ]; then
  step "Chromium anchor: tests/browser dependencies"
  if [ ! -d tests/browser/node_modules/playwright-core ]; then
    npm --prefix tests/browser ci --no-audit --no-fund
  fi
  if [ "$network" = 1 ]; then
    args+=(--chromium-net-script benches/chromium/network.mjs)
  else
    args+=(--chromium-script benches/chromium/anchor.mjs)
  fi
fi

if [ "$density" = 1 ]; then
  step "density (private network namespace)"
  exec "$target/$profile/call-bench" --density --runner-bin "$target/$profile/wilddog-runner" "${args[@]}"
fi

if [ "$network" = 1 ]; then
  command -v nft >/dev/null || { echo "bench.sh: nft not found (scripts/install-deps.sh installs nftables)" >&2; exit 1; }
  step "run (a private network namespace per scenario and link)"
else
  step "run (private network namespace)"
fi
exec "$target/$profile/call-bench" "${args[@]}"
