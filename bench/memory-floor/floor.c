// The memory floor of an int8 all-reduce on this machine: each peer must read its whole f32
// input and write its whole f32 output at least once, whatever else it does. This times exactly
// that (read a buffer, write another of the same size) with plain stores (each written line is
// read first) and with non-temporal stores, and a read-only pass. Run one copy per peer at once:
//   cc -O2 -mavx2 floor.c -o floor && (./floor 64 & ./floor 64; wait)
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    size_t bytes = (size_t)(argc > 1 ? atoi(argv[1]) : 64) << 20, n = bytes / 4;
    enum { reps = 21 };
    float *a = aligned_alloc(64, bytes), *b = aligned_alloc(64, bytes);
    memset(a, 1, bytes);
    memset(b, 2, bytes);
    const char *names[] = {"read+write, plain stores", "read+write, non-temporal stores", "read only"};
    __m256 acc = _mm256_setzero_ps();
    for (int mode = 0; mode < 3; mode++) {
        double t[reps];
        for (int r = 0; r < reps; r++) {
            double s = now();
            for (size_t i = 0; i < n; i += 8) {
                __m256 v = _mm256_load_ps(a + i);
                if (mode == 0) _mm256_store_ps(b + i, _mm256_add_ps(v, v));
                else if (mode == 1) _mm256_stream_ps(b + i, _mm256_add_ps(v, v));
                else acc = _mm256_add_ps(acc, v);
            }
            _mm_sfence();
            t[r] = now() - s;
        }
        qsort(t, reps, sizeof t[0], cmp);
        printf("%-32s %zu MiB: min %.2f  median %.2f  max %.2f ms\n", names[mode], bytes >> 20,
               t[0] * 1e3, t[reps / 2] * 1e3, t[reps - 1] * 1e3);
    }
    float out[8];
    _mm256_storeu_ps(out, acc);
    return out[0] == 42.0f;
}
