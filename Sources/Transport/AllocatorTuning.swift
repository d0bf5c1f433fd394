/// glibc's mallopt(3); not exported by the Glibc module.
@_silgen_name("mallopt")
private func mallopt(_ parameter: Int32, _ value: Int32) -> Int32

/// Keeps freed megabyte-sized buffers in the heap for reuse.
///
/// glibc serves large allocations with fresh mmap()ed pages and returns them on free, so every
/// 1 MiB frame buffer of a collective cost 256 page faults plus zeroing by the kernel: about a
/// fifth of the CPU time of a 256 MiB all-reduce in a profile (docs/benchmarks.md). Raising the
/// mmap and trim thresholds lets the heap recycle those buffers. Process-wide, so only the
/// executable calls it, once, at start.
public func tuneAllocatorForBulkTransfers() {
    #if os(Linux)
    _ = mallopt(-3, 32 << 20)  // M_MMAP_THRESHOLD (malloc.h): largest value glibc accepts on 64-bit
    _ = mallopt(-1, 512 << 20)  // M_TRIM_THRESHOLD
    #endif
}
