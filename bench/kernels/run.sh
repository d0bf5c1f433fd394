#!/bin/sh
# Builds the kernel micro-benchmark in release and runs it: 64 MiB buffers (memory-bound) and
# 256 KiB buffers (L2, compute-bound), wall clock and thread CPU clock. On x86-64 it also builds
# the AVX2 variant (the copy `peernode` runs on CPUs with AVX2, docs/kernels.md §6) into
# .build-avx2 and runs its L2 view after the baseline one.
set -e
cd "$(dirname "$0")"
swift build -c release
.build/release/kernel-bench all
.build/release/kernel-bench all --cpu
.build/release/kernel-bench cached --cpu
if [ "$(uname -m)" = x86_64 ] && grep -qw avx2 /proc/cpuinfo; then
  swift build -c release --scratch-path .build-avx2 \
    -Xswiftc -Xfrontend -Xswiftc -target-cpu -Xswiftc -Xfrontend -Xswiftc haswell
  echo "# AVX2 build"
  .build-avx2/release/kernel-bench cached --cpu
fi
