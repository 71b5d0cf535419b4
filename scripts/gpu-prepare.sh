#!/usr/bin/env bash
# Run on the dev machine before a device call: gathers what scripts/gpu-check.sh needs there and the
# device image lacks (it has no network): Debian 12 packages of the libraries ringtrain builds with, and
# the peer programs. Everything lands in .device/ (git-ignored, carried by the device call).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$ROOT/.device/debs" "$ROOT/.device/peers"
cd "$ROOT/.device/debs"
apt-get download -qq \
  libyaml-cpp-dev libyaml-cpp0.7 libspdlog-dev libspdlog1.10 libfmt-dev libfmt9 libcli11-dev \
  nlohmann-json3-dev libgtest-dev libgmock-dev libgloo-dev libgloo0 libhiredis0.14 libibverbs1 \
  libcpp-httplib-dev libcpp-httplib0.11 libboost1.74-dev libbenchmark-dev libbenchmark1debian \
  libbrotli-dev libssl-dev zlib1g-dev wrk libluajit-5.1-2 libluajit-5.1-common 2>/dev/null
cp "$ROOT"/../shared/peers/*.py "$ROOT/.device/peers/"
du -sh "$ROOT/.device"
