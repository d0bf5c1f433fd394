// delayline: a wire with a fixed one-way delay, for scripts/netkit.sh (this kernel has no netem).
//
//   delayline TAP_A TAP_B DELAY_US
//
// Opens the two TAP devices (created beforehand by `ip tuntap add ... mode tap`), and forwards
// every Ethernet frame read from one to the other DELAY_US microseconds later, in order. Each
// direction has a FIFO of at most MAX_FRAMES frames; a frame that finds it full is dropped (like a
// full router queue) and counted. Rate limits are not its job: tbf on the links around it does that.
// Stops by itself when a TAP goes away (its namespace is deleted) or on SIGTERM/SIGINT, and prints
// how many frames it forwarded and dropped per direction.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define MAX_FRAMES 8192
#define MAX_FRAME 2048

struct slot { uint64_t due_ns; uint16_t len; unsigned char data[MAX_FRAME]; };
struct queue { struct slot *slots; unsigned head, count; uint64_t forwarded, dropped; };

static volatile sig_atomic_t stopping = 0;
static void on_signal(int sig) { (void)sig; stopping = 1; }

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int open_tap(const char *name) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) { perror("delayline: /dev/net/tun"); exit(2); }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    if (strlen(name) >= IFNAMSIZ) { fprintf(stderr, "delayline: name too long: %s\n", name); exit(2); }
    strcpy(ifr.ifr_name, name);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) { perror("delayline: TUNSETIFF"); exit(2); }
    return fd;
}

// Reads every frame waiting on `fd` into `q`, stamped due at now + delay. Returns -1 when the
// device is gone.
static int drain(int fd, struct queue *q, uint64_t delay_ns) {
    for (;;) {
        unsigned char scratch[MAX_FRAME];
        unsigned char *buf = scratch;
        struct slot *s = NULL;
        if (q->count < MAX_FRAMES) {
            s = &q->slots[(q->head + q->count) % MAX_FRAMES];
            buf = s->data;
        }
        ssize_t n = read(fd, buf, MAX_FRAME);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return 0;
            return -1;
        }
        if (n == 0) return -1;
        if (!s) { q->dropped++; continue; }
        s->len = (uint16_t)n;
        s->due_ns = now_ns() + delay_ns;
        q->count++;
    }
}

// Writes every frame of `q` that is due to `fd`. Returns -1 when the device is gone.
static int release(int fd, struct queue *q, uint64_t now) {
    while (q->count > 0) {
        struct slot *s = &q->slots[q->head];
        if (s->due_ns > now) break;
        if (write(fd, s->data, s->len) < 0) {
            if (errno == EAGAIN || errno == EINTR) { q->dropped++; }
            else if (errno == EIO || errno == EBADFD || errno == ENODEV) return -1;
            else q->dropped++;
        } else {
            q->forwarded++;
        }
        q->head = (q->head + 1) % MAX_FRAMES;
        q->count--;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: delayline TAP_A TAP_B DELAY_US\n"); return 2; }
    char *end = NULL;
    long long delay_us = strtoll(argv[3], &end, 10);
    if (!end || *end || delay_us < 0 || delay_us > 10000000) { fprintf(stderr, "delayline: bad delay '%s'\n", argv[3]); return 2; }
    uint64_t delay_ns = (uint64_t)delay_us * 1000u;
    // Whatever descriptors the starter left open (a test harness's pipe, say) would stay open as
    // long as this runs, and whoever waits for their end would wait for ever: close them.
    for (int fd = 3; fd < 1024; fd++) close(fd);
    int fd[2] = { open_tap(argv[1]), open_tap(argv[2]) };
    struct queue q[2];  // q[i]: frames read from fd[i], to be written to fd[1 - i]
    for (int i = 0; i < 2; i++) {
        memset(&q[i], 0, sizeof q[i]);
        q[i].slots = calloc(MAX_FRAMES, sizeof(struct slot));
        if (!q[i].slots) { fprintf(stderr, "delayline: out of memory\n"); return 2; }
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    int gone = 0;
    while (!stopping && !gone) {
        uint64_t now = now_ns();
        for (int i = 0; i < 2; i++) if (release(fd[1 - i], &q[i], now) < 0) gone = 1;
        // Sleep until a frame arrives or the earliest queued frame is due.
        uint64_t wait_ns = 1000000000u;
        for (int i = 0; i < 2; i++) {
            if (q[i].count == 0) continue;
            uint64_t due = q[i].slots[q[i].head].due_ns;
            uint64_t w = due > now ? due - now : 0;
            if (w < wait_ns) wait_ns = w;
        }
        struct pollfd p[2] = { { fd[0], POLLIN, 0 }, { fd[1], POLLIN, 0 } };
        struct timespec ts = { (time_t)(wait_ns / 1000000000u), (long)(wait_ns % 1000000000u) };
        int r = ppoll(p, 2, &ts, NULL);
        if (r < 0 && errno != EINTR) { perror("delayline: ppoll"); break; }
        for (int i = 0; i < 2; i++) {
            if (r > 0 && (p[i].revents & (POLLERR | POLLHUP | POLLNVAL))) gone = 1;
            if (r > 0 && (p[i].revents & POLLIN) && drain(fd[i], &q[i], delay_ns) < 0) gone = 1;
        }
    }
    fprintf(stderr, "delayline: %s->%s forwarded %llu dropped %llu, %s->%s forwarded %llu dropped %llu\n",
            argv[1], argv[2], (unsigned long long)q[0].forwarded, (unsigned long long)q[0].dropped,
            argv[2], argv[1], (unsigned long long)q[1].forwarded, (unsigned long long)q[1].dropped);
    return 0;
}
