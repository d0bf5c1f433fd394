#!/bin/sh
# Builds the kernel micro-benchmark in release and runs it: 64 MiB buffers (memory-bound) and
# 256 KiB buffers (L2, compute-bound), wall clock and thread CPU clock.
set -e
cd "$(dirname "$0")"
swift build -c release
.build/release/kernel-bench all
.build/release/kernel-bench all --cpu
.build/release/kernel-bench cached --cpu
