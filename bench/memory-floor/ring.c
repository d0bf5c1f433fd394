// A hand-written reference for peernode's ring all-reduce on this machine: the same wire scheme
// over TCP loopback, in C, without anything peernode adds (framing, handshake, tags, checks,
// timeouts, membership). N processes in a ring; per process a sender thread and a
// receiver thread, so that compute, send and receive overlap; 1 MiB segments; 256 KiB socket
// buffers, as peernode uses for peers on one host.
//
//   fp32: reduce-scatter in N-1 steps (add the received chunk to mine, send the sum), then an
//         all-gather that receives each chunk straight into the output and forwards it.
//   int8: the first step quantizes (per 256-element block: min, step, 256 codes); each later
//         step decodes the received codes, adds the local chunk and quantizes again; the owner
//         also decodes its quantized sum into its output (the owner rule); the all-gather
//         forwards the owners' codes and decodes them. Output is written with non-temporal
//         stores, as peernode does for large results.
//
// It answers one question: how far below the fp32 time does an int8 all-reduce of this scheme
// get here when nothing else surrounds it? (Not a strict bound: its receive buffers are whole
// chunks, where peernode reuses one segment-sized buffer.)
//   cc -O2 -mavx2 -pthread ring.c -o ring && ./ring N MiB REPS [ROUNDS]
// prints, per round, the median (min-max) over REPS ops of the slowest rank's time, the median
// CPU time of all ranks together per op (comparable to `peernode bench`'s cpu_ms), whether every
// rank's result is within the bound of the exact sum, and whether all ranks' results are equal.
// scripts/bench-c-ring.sh runs it beside peernode and prints both int8/fp32 ratios.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <immintrin.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { BLOCK = 256, HEADER = 8, SEGMENT = 1 << 18, MAX_PEERS = 8, MAX_PARTS = 2 * (MAX_PEERS - 1) };

// CLOCK_MONOTONIC for wall time, CLOCK_PROCESS_CPUTIME_ID for the CPU time of all threads.
static double seconds(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void *buffer(size_t bytes) {
    void *p = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) die("alloc");
    memset(p, 0, bytes);
    return p;
}

// A count one thread advances and another waits on.
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    size_t value;
} progress;

static void progress_init(progress *p) {
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    p->value = 0;
}

static void progress_set(progress *p, size_t v) {
    pthread_mutex_lock(&p->lock);
    p->value = v;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->lock);
}

static size_t progress_wait(progress *p, size_t v) {
    pthread_mutex_lock(&p->lock);
    while (p->value < v) pthread_cond_wait(&p->cond, &p->lock);
    size_t now = p->value;
    pthread_mutex_unlock(&p->lock);
    return now;
}

// One op's traffic: parts of `part` bytes each, sent in order as far as `ready` allows and
// received in order into `into`, reported through `got` as each segment completes.
typedef struct {
    int send_fd, recv_fd, parts;
    size_t part, segment;  // bytes of a part, of a segment (a part is whole segments)
    char *out[MAX_PARTS], *into[MAX_PARTS];
    progress ready, got, sent, start;  // start: the op number the threads may begin (0: quit)
    int quit;
} traffic;

static void *sender(void *arg) {
    traffic *t = arg;
    for (size_t op = 1;; op++) {
        progress_wait(&t->start, op);
        if (t->quit) return NULL;
        size_t total = t->part * t->parts, done = 0;
        while (done < total) {
            size_t limit = progress_wait(&t->ready, done + 1);
            while (done < limit) {
                size_t k = done / t->part, off = done % t->part;
                size_t end = limit - k * t->part < t->part ? limit - k * t->part : t->part;
                ssize_t n = send(t->send_fd, t->out[k] + off, end - off, 0);
                if (n <= 0) die("send");
                done += (size_t)n;
            }
        }
        progress_set(&t->sent, op);
    }
}

static void *receiver(void *arg) {
    traffic *t = arg;
    for (size_t op = 1;; op++) {
        progress_wait(&t->start, op);
        if (t->quit) return NULL;
        size_t total = t->part * t->parts, done = 0, reported = 0;
        while (done < total) {
            size_t k = done / t->part, off = done % t->part;
            ssize_t n = recv(t->recv_fd, t->into[k] + off, t->part - off, 0);
            if (n <= 0) die("recv");
            done += (size_t)n;
            if (done / t->segment != reported / t->segment || done == total) {  // a segment is complete
                progress_set(&t->got, done);
                reported = done;
            }
        }
    }
}

static size_t encoded(size_t n) { return n / BLOCK * (HEADER + BLOCK); }

// Rank `rank`'s input at index `i`: in [-1, 1), computable anywhere for the check.
static float value(int rank, size_t i) { return (float)((i * 2654435761u + (unsigned)rank * 7919u) % 2001) * 0.001f - 1.0f; }

static __m256i codes8(__m256 x, __m256 lo, __m256 inv) {
    __m256 u = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(x, lo), inv), _mm256_set1_ps(12582912.0f));
    return _mm256_and_si256(_mm256_castps_si256(u), _mm256_set1_epi32(255));
}

static void quantize_block(const float *x, uint8_t *out) {
    __m256 lo = _mm256_load_ps(x), hi = lo;
    for (int i = 8; i < BLOCK; i += 8) {
        __m256 v = _mm256_load_ps(x + i);
        lo = _mm256_min_ps(lo, v);
        hi = _mm256_max_ps(hi, v);
    }
    float l[8], h[8];
    _mm256_storeu_ps(l, lo);
    _mm256_storeu_ps(h, hi);
    float mn = l[0], mx = h[0];
    for (int i = 1; i < 8; i++) {
        mn = l[i] < mn ? l[i] : mn;
        mx = h[i] > mx ? h[i] : mx;
    }
    float step = (mx - mn) / 255.0f, inv = step > 0 ? 1.0f / step : 0.0f;
    memcpy(out, &mn, 4);
    memcpy(out + 4, &step, 4);
    __m256 vlo = _mm256_set1_ps(mn), vinv = _mm256_set1_ps(inv);
    for (int i = 0; i < BLOCK; i += 32) {
        __m256i ab = _mm256_packus_epi32(codes8(_mm256_load_ps(x + i), vlo, vinv), codes8(_mm256_load_ps(x + i + 8), vlo, vinv));
        __m256i cd = _mm256_packus_epi32(codes8(_mm256_load_ps(x + i + 16), vlo, vinv), codes8(_mm256_load_ps(x + i + 24), vlo, vinv));
        __m256i all = _mm256_shuffle_epi32(_mm256_permute4x64_epi64(_mm256_packus_epi16(ab, cd), 0xD8), 0xD8);
        _mm256_storeu_si256((__m256i *)(out + HEADER + i), all);
    }
}

// Decodes one block into `out` (streamed when `stream`), adding `addend` when given.
static void decode_block(const uint8_t *in, const float *addend, float *out, int stream) {
    float mn, step;
    memcpy(&mn, in, 4);
    memcpy(&step, in + 4, 4);
    __m256 vlo = _mm256_set1_ps(mn), vstep = _mm256_set1_ps(step);
    for (int i = 0; i < BLOCK; i += 8) {
        __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(in + HEADER + i)));
        __m256 y = _mm256_add_ps(vlo, _mm256_mul_ps(_mm256_cvtepi32_ps(c), vstep));
        if (addend) y = _mm256_add_ps(_mm256_load_ps(addend + i), y);
        if (stream) _mm256_stream_ps(out + i, y);
        else _mm256_store_ps(out + i, y);
    }
}

static void add(const float *a, const float *b, float *out, size_t n) {
    for (size_t i = 0; i < n; i += 8) _mm256_store_ps(out + i, _mm256_add_ps(_mm256_load_ps(a + i), _mm256_load_ps(b + i)));
}

// Two token passes round the ring: the first tells rank 0 that all have arrived, the second
// releases everyone.
static void barrier(int rank, int send_fd, int recv_fd) {
    char b = 0;
    for (int round = 0; round < 2; round++) {
        if (rank == 0 && write(send_fd, &b, 1) != 1) die("barrier");
        if (read(recv_fd, &b, 1) != 1) die("barrier");
        if (rank != 0 && write(send_fd, &b, 1) != 1) die("barrier");
    }
}

// Runs `reps` + 1 ops (the first a warm-up) and stores this rank's times, then its CPU times
// (both in seconds), then whether its output is within the bound of the exact sum (1 or 0),
// then a hash of its output (its bits as a double) for the comparison of ranks.
static void run(int rank, int peers, int send_fd, int recv_fd, int int8, size_t n, int reps, double *times) {
    size_t c = n / peers, segments = c / SEGMENT;
    size_t seg_bytes = int8 ? encoded(SEGMENT) : SEGMENT * 4, part = segments * seg_bytes;
#define CHUNK(k) ((size_t)(((k) % peers + peers) % peers) * c)
    float *x = buffer(n * 4), *y = buffer(n * 4), *sum = buffer(BLOCK * 4);
    for (size_t i = 0; i < n; i++) x[i] = value(rank, i);
    // int8 encodes every step into a buffer of its own and keeps every part it receives; fp32
    // sends its first step from the input and its owned chunk from the output, and receives the
    // all-gather straight into the output.
    char *made[MAX_PEERS] = {0}, *received[MAX_PARTS] = {0};
    for (int k = int8 ? 0 : 1; k < (int8 ? peers : peers - 1); k++) made[k] = buffer(part);
    for (int k = 0; k < (int8 ? 2 : 1) * (peers - 1); k++) received[k] = buffer(part);

    traffic t = {.send_fd = send_fd, .recv_fd = recv_fd, .parts = 2 * (peers - 1), .part = part, .segment = seg_bytes};
    progress_init(&t.ready), progress_init(&t.got), progress_init(&t.sent), progress_init(&t.start);
    for (int k = 0; k < peers - 1; k++) {  // reduce-scatter step k, then all-gather step k
        int ag = peers - 1 + k;
        if (int8) {
            t.out[k] = made[k];
            t.out[ag] = k == 0 ? made[peers - 1] : received[ag - 1];
            t.into[k] = received[k];
            t.into[ag] = received[ag];
        } else {
            t.out[k] = k == 0 ? (char *)(x + CHUNK(rank)) : made[k];
            t.out[ag] = (char *)(y + CHUNK(rank + 1 - k));
            t.into[k] = received[k];
            t.into[ag] = (char *)(y + CHUNK(rank - k));
        }
    }
    pthread_t st, rt;
    pthread_create(&st, NULL, sender, &t);
    pthread_create(&rt, NULL, receiver, &t);

    for (int r = 0; r <= reps; r++) {
        barrier(rank, send_fd, recv_fd);
        double s = seconds(CLOCK_MONOTONIC), s_cpu = seconds(CLOCK_PROCESS_CPUTIME_ID);
        progress_set(&t.ready, int8 ? 0 : part);  // fp32: the first part is the input itself
        progress_set(&t.got, 0);
        progress_set(&t.start, (size_t)r + 1);
        if (int8)
            for (size_t g = 0; g < segments; g++) {
                for (size_t i = g * SEGMENT; i < (g + 1) * SEGMENT; i += BLOCK)
                    quantize_block(x + CHUNK(rank) + i, (uint8_t *)made[0] + encoded(i));
                progress_set(&t.ready, (g + 1) * seg_bytes);
            }
        for (int k = 1; k < peers; k++) {  // reduce-scatter steps 1..N-1; the last is the owner's
            const float *local = x + CHUNK(rank - k);
            for (size_t g = 0; g < segments; g++) {
                progress_wait(&t.got, (k - 1) * part + (g + 1) * seg_bytes);
                size_t from = g * SEGMENT, to = from + SEGMENT;
                if (int8) {
                    const uint8_t *in = (const uint8_t *)received[k - 1];
                    uint8_t *q = (uint8_t *)made[k];
                    for (size_t i = from; i < to; i += BLOCK) {
                        decode_block(in + encoded(i), local + i, sum, 0);
                        quantize_block(sum, q + encoded(i));
                        if (k == peers - 1) decode_block(q + encoded(i), NULL, y + CHUNK(rank + 1) + i, 1);
                    }
                } else {
                    float *dst = k == peers - 1 ? y + CHUNK(rank + 1) : (float *)made[k];
                    add((const float *)received[k - 1] + from, local + from, dst + from, SEGMENT);
                }
                progress_set(&t.ready, k * part + (g + 1) * seg_bytes);
            }
        }
        for (int k = 0; k < peers - 1; k++) {  // all-gather: forward, then decode
            size_t base = (peers - 1 + k) * part;
            for (size_t g = 0; g < segments; g++) {
                progress_wait(&t.got, base + (g + 1) * seg_bytes);
                if (k < peers - 2) progress_set(&t.ready, base + part + (g + 1) * seg_bytes);
                if (int8)
                    for (size_t i = g * SEGMENT; i < (g + 1) * SEGMENT; i += BLOCK)
                        decode_block((const uint8_t *)received[peers - 1 + k] + encoded(i), NULL, y + CHUNK(rank - k) + i, 1);
            }
        }
        _mm_sfence();
        progress_wait(&t.sent, (size_t)r + 1);  // done when its sends are, as peernode's op
        times[r] = seconds(CLOCK_MONOTONIC) - s;
        times[reps + 1 + r] = seconds(CLOCK_PROCESS_CPUTIME_ID) - s_cpu;
    }
    t.quit = 1;
    progress_set(&t.start, (size_t)reps + 2);
    pthread_join(st, NULL);
    pthread_join(rt, NULL);
    // Each value's path has N quantizations of partial sums of k <= N inputs, each within half a
    // step of a range <= 2k; unquantized, only the f32 roundings of the sum.
    double bound = 1e-5 * peers, ok = 1;
    if (int8)
        for (int k = 1; k <= peers; k++) bound += k / 255.0 * 1.01;
    for (size_t i = 0; i < n; i += 61) {
        double exact = 0;
        for (int p = 0; p < peers; p++) exact += value(p, i);
        if (!(y[i] - exact <= bound && exact - y[i] <= bound)) ok = 0;
    }
    uint64_t hash = 1469598103934665603u, word;
    for (size_t i = 0; i < n; i += 2) {
        memcpy(&word, y + i, 8);
        hash = (hash ^ word) * 1099511628211u;
    }
    times[2 * reps + 2] = ok;
    memcpy(times + 2 * reps + 3, &hash, 8);
    free(x), free(y), free(sum);
    for (int k = 0; k < peers; k++) free(made[k]);
    for (int k = 0; k < 2 * (peers - 1); k++) free(received[k]);
#undef CHUNK
}

// Where rank `rank` stores the results of run `run` (round * 2 + int8): `per` doubles.
static double *slot(double *times, size_t per, size_t runs, int rank, size_t run) {
    return times + ((size_t)rank * runs + run) * per;
}

// Sorts `v`.
static double median(double *v, int n) {
    qsort(v, n, sizeof v[0], cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int main(int argc, char **argv) {
    int peers = argc > 1 ? atoi(argv[1]) : 2, mib = argc > 2 ? atoi(argv[2]) : 64;
    int reps = argc > 3 ? atoi(argv[3]) : 11, rounds = argc > 4 ? atoi(argv[4]) : 3;
    size_t n = ((size_t)(mib > 0 ? mib : 0) << 20) / 4;
    if (peers < 2 || peers > MAX_PEERS || mib < 1 || reps < 1 || rounds < 1 || n % ((size_t)peers * SEGMENT)) {
        fprintf(stderr, "usage: ring N(2-%d) MiB REPS [ROUNDS]; MiB must split into N whole MiB\n", MAX_PEERS);
        return 2;
    }
    int listeners[MAX_PEERS], buf = 256 << 10, one = 1;
    struct sockaddr_in addr[MAX_PEERS];
    for (int r = 0; r < peers; r++) {
        listeners[r] = socket(AF_INET, SOCK_STREAM, 0);
        addr[r] = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof addr[r];
        if (bind(listeners[r], (struct sockaddr *)&addr[r], len) || listen(listeners[r], 1) ||
            getsockname(listeners[r], (struct sockaddr *)&addr[r], &len))
            die("listen");
    }
    // times[rank][round * 2 + int8]: reps + 1 times, reps + 1 CPU times, the check, the hash
    size_t runs = 2 * (size_t)rounds, per = 2 * (size_t)reps + 4, slots = (size_t)peers * runs * per;
    double *times = mmap(NULL, slots * sizeof(double), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (times == MAP_FAILED) die("mmap");
    int rank = 0;
    for (int r = 1; r < peers && rank == 0; r++) {
        pid_t pid = fork();
        if (pid < 0) die("fork");
        if (pid == 0) rank = r;
    }
    int send_fd = socket(AF_INET, SOCK_STREAM, 0);
    int next = (rank + 1) % peers;
    if (connect(send_fd, (struct sockaddr *)&addr[next], sizeof addr[next])) die("connect");
    int recv_fd = accept(listeners[rank], NULL, NULL);
    if (recv_fd < 0) die("accept");
    for (int fd = send_fd, i = 0; i < 2; fd = recv_fd, i++) {
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) ||
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf) || setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf))
            die("setsockopt");
    }
    for (int round = 0; round < rounds; round++)
        for (int int8 = 0; int8 < 2; int8++)
            run(rank, peers, send_fd, recv_fd, int8, n, reps, slot(times, per, runs, rank, round * 2 + int8));
    close(send_fd), close(recv_fd);
    if (rank != 0) return 0;
    while (wait(NULL) > 0) {}
    int failed = 0;
    for (int round = 0; round < rounds; round++)
        for (int int8 = 0; int8 < 2; int8++) {
            double slowest[reps], cpus[reps];
            int ok = 1, equal = 1;
            for (int r = 1; r <= reps; r++) {
                slowest[r - 1] = cpus[r - 1] = 0;
                for (int p = 0; p < peers; p++) {
                    const double *mine = slot(times, per, runs, p, round * 2 + int8);
                    slowest[r - 1] = mine[r] > slowest[r - 1] ? mine[r] : slowest[r - 1];
                    cpus[r - 1] += mine[reps + 1 + r];
                }
            }
            const double *first = slot(times, per, runs, 0, round * 2 + int8);
            for (int p = 0; p < peers; p++) {
                const double *mine = slot(times, per, runs, p, round * 2 + int8);
                ok &= mine[2 * reps + 2] == 1;
                equal &= memcmp(mine + 2 * reps + 3, first + 2 * reps + 3, 8) == 0;
            }
            failed |= !ok || !equal;
            double mid = median(slowest, reps);  // sorted now
            printf("ring-c N=%d %s %d MiB: median %.2f ms (%.2f-%.2f) cpu %.1f ms check=%s parity=%s\n", peers,
                   int8 ? "int8" : "fp32", mib, mid * 1e3, slowest[0] * 1e3, slowest[reps - 1] * 1e3, median(cpus, reps) * 1e3,
                   ok ? "ok" : "FAIL", equal ? "equal" : "DIFFERENT");
            fflush(stdout);
        }
    return failed;
}
