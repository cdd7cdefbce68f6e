#!/usr/bin/env bash
# The main job: installs what it needs, builds, and runs `wilddog-runner demo` (embedded
# signaling server, echo bot, web page, one self-check call). Extra arguments go to `demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
WILDDOG_SKIP_BROWSER=1 scripts/install-deps.sh
cargo build --release --locked -p wilddog-runner
exec target/release/wilddog-runner demo "$@"
