// Memory hints the Swift kernels cannot express (Swift has no non-temporal store, prefetch or
// store fence). Header-only and always inlined, so that each copy of the kernels (baseline and
// AVX2, docs/kernels.md §6) gets them compiled for its own instruction set. None of them
// changes a value, only how it travels through the caches.
#ifndef PEERNODE_KERNEL_SUPPORT_H
#define PEERNODE_KERNEL_SUPPORT_H

#include <string.h>

typedef float pn_f32x16 __attribute__((ext_vector_type(16)));

/// Stores 16 floats past the caches (x86-64 `movntps`): a large result written once then saves
/// the read for ownership of each line it overwrites. `p` must be 64-byte aligned. Elsewhere a
/// plain store.
static inline __attribute__((always_inline)) void pn_stream_f32x16(void *p, pn_f32x16 v) {
#if defined(__x86_64__)
    __builtin_nontemporal_store(v, (pn_f32x16 *)p);
#else
    memcpy(p, &v, sizeof v);
#endif
}

/// Orders the streamed stores before every later store (x86 `sfence`): they are weakly ordered,
/// and whoever is told that a result is complete must see all of it. Elsewhere nothing.
static inline __attribute__((always_inline)) void pn_stream_fence(void) {
#if defined(__x86_64__)
    __builtin_ia32_sfence();
#endif
}

/// Asks for the cache line at `p` ahead of its use; never faults, whatever `p` is.
static inline __attribute__((always_inline)) void pn_prefetch(const void *p) {
    __builtin_prefetch(p, 0, 3);
}

#endif
