#!/usr/bin/env bash
# Installs the Debian 12 packages that building, running and testing wilddog-gst need.
# Idempotent: packages already present are left alone. Needs root (or sudo).
set -euo pipefail

packages=(
  # build
  build-essential pkg-config ca-certificates curl
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev libnice-dev
  # runtime: elements the plugin's pipelines use
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-nice gstreamer1.0-libav gstreamer1.0-tools
  # tests: gst-discoverer-1.0 checks the runner's recordings
  gstreamer1.0-plugins-base-apps
  # tests: private network namespaces (tc shapes their links, nftables drops packets), the
  # meson build, the browser tests
  iproute2 nftables util-linux meson ninja-build chromium nodejs npm
  # tests: the signaling server across nodes (a real Redis, a real load balancer)
  redis-server haproxy
  # tests: TURN (coturn), blocked paths and loss (nftables), Firefox ESR, the aiortc peer
  # (a Python virtualenv made by the test, aiortc from PyPI)
  coturn nftables firefox-esr python3-venv
)
if [ "${WILDDOG_SKIP_BROWSER:-0}" = 1 ]; then
  packages=("${packages[@]/chromium}")
  packages=("${packages[@]/firefox-esr}")
fi

missing=()
for p in "${packages[@]}"; do
  [ -n "$p" ] || continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from outside apt (nodesource, nvm): accept any working pair.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
clean=(); for p in "${missing[@]}"; do [ -n "$p" ] && clean+=("$p"); done

if ((${#clean[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing: ${clean[*]}" >&2
  $sudo apt-get update
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${clean[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust 1.95 or newer (https://rustup.rs)" >&2
  exit 1
fi
