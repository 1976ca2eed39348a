/* The metarim C example: the device side of metarim through its C API (firmware/capi), on QEMU
 * mps2-an386 (Cortex-M4F), mirroring the Rust firmware (firmware/app/src/lib.rs): (a) evaluate
 * FW_EPISODES episodes of FW_LEVEL on seed FW_SEED, (b) adapt the fast group for
 * FW_ADAPT_EPISODES episodes on seed FW_SEED + 1, (c) evaluate the same episodes again.
 *
 * The model blob is not linked in: QEMU loads it into the BLOB region (link.ld). Lines starting
 * "firmware: " are byte-identical in format to the Rust firmware's; "c-example: " lines are
 * this example's own. Exit status: 0 done, 2 on an error from the library (its message printed
 * as "firmware: error: <message>"), 3 on a HardFault. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "metarim.h"
#include "semihost.h"
#include "startup.h"

/* Settings, fixed at compile time (-D). */
#ifndef FW_LEVEL
#define FW_LEVEL "BabyAI-GoToObj-v0"
#endif
#ifndef FW_EPISODES
#define FW_EPISODES 20
#endif
#ifndef FW_SEED
#define FW_SEED 1
#endif
#ifndef FW_ADAPT_EPISODES
#define FW_ADAPT_EPISODES 200
#endif
#ifndef FW_ARGMAX
#define FW_ARGMAX 0
#endif

/* The model blob's region (link.ld). */
extern const uint8_t __blob_start[], __blob_end[];

/* The device context: static, aligned, exactly the size the header gives. */
static uint8_t device_mem[METARIM_DEVICE_BYTES] __attribute__((aligned(METARIM_DEVICE_ALIGN)));

/* ---- text out, integers only -------------------------------------------------------------- */

struct line {
    char buf[192];
    size_t n;
};

static void put_str(struct line *l, const char *s)
{
    while (*s != '\0' && l->n + 1 < sizeof l->buf) {
        l->buf[l->n++] = *s++;
    }
}

static void put_u64(struct line *l, uint64_t v)
{
    char tmp[20];
    size_t k = 0;
    do {
        tmp[k++] = (char)('0' + (v % 10u));
        v /= 10u;
    } while (v != 0u);
    while (k > 0u && l->n + 1 < sizeof l->buf) {
        l->buf[l->n++] = tmp[--k];
    }
}

static void put_hex64(struct line *l, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    put_str(l, "0x");
    for (int i = 15; i >= 0 && l->n + 1 < sizeof l->buf; i--) {
        l->buf[l->n++] = digits[(v >> (4 * i)) & 0xFu];
    }
}

/* `name` then `v`: each "key=value" of the report lines (name " steps=", say). */
static void put_field(struct line *l, const char *name, uint64_t v)
{
    put_str(l, name);
    put_u64(l, v);
}

/* `name` then "k/n": a count of successes out of a number of episodes. */
static void put_ratio(struct line *l, const char *name, uint64_t k, uint64_t n)
{
    put_field(l, name, k);
    put_str(l, "/");
    put_u64(l, n);
}

/* Print the line with a newline, and start it again. */
static void put_end(struct line *l)
{
    if (l->n + 2 > sizeof l->buf) {
        l->n = sizeof l->buf - 2;
    }
    l->buf[l->n++] = '\n';
    l->buf[l->n] = '\0';
    sh_write0(l->buf);
    l->n = 0;
}

/* ---- errors --------------------------------------------------------------------------------- */

/* Print "firmware: error: <message>" for the device's last failure (or the status's own text
 * when no device exists) and return the exit status: EXIT_BAD_BLOB when the blob region holds
 * no usable blob (as the Rust firmware), else EXIT_CORE_ERROR. */
static int fail(const metarim_device *dev, metarim_status st)
{
    char msg[160];
    if (dev != NULL) {
        (void)metarim_last_error(dev, msg, sizeof msg);
    } else {
        const char *s = metarim_status_str(st);
        size_t i = 0;
        for (; s[i] != '\0' && i + 1 < sizeof msg; i++) {
            msg[i] = s[i];
        }
        msg[i] = '\0';
    }
    struct line l = {.n = 0};
    put_str(&l, "firmware: error: ");
    put_str(&l, msg);
    put_end(&l);
    return (int)(st == METARIM_STATUS_BAD_BLOB ? EXIT_BAD_BLOB : EXIT_CORE_ERROR);
}

/* ---- evaluation ----------------------------------------------------------------------------- */

/* FNV-1a 64 over one byte per action. */
#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

struct phase {
    uint32_t episodes;
    uint32_t successes;
    uint64_t steps;
    uint64_t digest;
};

/* The phase's line: "firmware: <phase>: episodes=N success=K/N". */
static void report(const char *phase, const struct phase *p)
{
    struct line l = {.n = 0};
    put_str(&l, "firmware: ");
    put_str(&l, phase);
    put_field(&l, ": episodes=", p->episodes);
    put_ratio(&l, " success=", p->successes, p->episodes);
    put_end(&l);
}

/* Episodes 0..FW_EPISODES-1 of FW_LEVEL on seed FW_SEED, as the Rust firmware's
 * episodes::run: act, step, until the episode terminates or is truncated; then the phase's
 * line (`report`). */
static metarim_status evaluate(metarim_device *dev, const char *phase, struct phase *p)
{
    p->episodes = 0;
    p->successes = 0;
    p->steps = 0;
    p->digest = FNV_OFFSET;
    for (uint32_t i = 0; i < (uint32_t)FW_EPISODES; i++) {
        metarim_status st = metarim_episode_begin(dev, FW_LEVEL, (uint64_t)FW_SEED, i);
        if (st != METARIM_STATUS_OK) {
            return st;
        }
        for (;;) {
            uint8_t a = 0;
            st = metarim_act(dev, FW_ARGMAX != 0, &a);
            if (st != METARIM_STATUS_OK) {
                return st;
            }
            p->digest = (p->digest ^ a) * FNV_PRIME;
            metarim_step_result r;
            st = metarim_env_step(dev, a, &r);
            if (st != METARIM_STATUS_OK) {
                return st;
            }
            p->steps++;
            if (r.terminated || r.truncated) {
                p->episodes++;
                p->successes += r.success ? 1u : 0u;
                break;
            }
        }
    }
    report(phase, p);
    return METARIM_STATUS_OK;
}

int main(void)
{
    struct line l = {.n = 0};
    put_field(&l,
              "c-example: metarim C API, Tiny policy on " FW_LEVEL
              " (Cortex-M4F, QEMU mps2-an386), device ",
              METARIM_DEVICE_BYTES);
    put_str(&l, " B");
    put_end(&l);

    metarim_device *dev = NULL;
    metarim_status st = metarim_device_init(device_mem, sizeof device_mem, __blob_start,
                                            (size_t)(__blob_end - __blob_start), &dev);
    if (st != METARIM_STATUS_OK) {
        return fail(dev, st);
    }
    /* The set-up's stack peak, then paint again for the episodes' own. */
    uint32_t stack_setup = stack_high_water();
    paint_stack();
    put_field(&l, "c-example: episodes=", (uint64_t)FW_EPISODES);
    put_field(&l, " seed=", (uint64_t)FW_SEED);
    put_field(&l, " adapt_episodes=", (uint64_t)FW_ADAPT_EPISODES);
    put_str(&l, FW_ARGMAX ? " actions=argmax" : " actions=sample");
    put_end(&l);

    /* (a) The model as loaded. */
    struct phase before;
    st = evaluate(dev, "before", &before);
    if (st != METARIM_STATUS_OK) {
        return fail(dev, st);
    }

    /* (b) Fast-only adaptation on other episodes of the same level (seed + 1). */
    metarim_adapt_stats a;
    st = metarim_adapt(dev, FW_LEVEL, (uint64_t)FW_SEED + 1u, (uint32_t)FW_ADAPT_EPISODES, &a);
    if (st != METARIM_STATUS_OK) {
        return fail(dev, st);
    }
    put_field(&l, "firmware: adapted: episodes=", a.episodes);
    put_field(&l, " steps=", a.steps);
    put_field(&l, " windows=", a.windows);
    put_field(&l, " sgd_steps=", a.optimizer_steps);
    put_ratio(&l, " success=", a.successes, a.episodes);
    put_end(&l);
    put_ratio(&l, "c-example: guard: probe=", a.guard_probe_successes, a.guard_probe_episodes);
    put_ratio(&l, " trailing=", a.guard_trail_successes, a.guard_trail_episodes);
    put_field(&l, " restores=", a.guard_reverts);
    put_field(&l, " stopped_after=", a.guard_stopped_after);
    put_str(&l, a.guard_kept ? " kept=true" : " kept=false");
    put_end(&l);

    /* (c) The same evaluation episodes again. */
    struct phase after;
    st = evaluate(dev, "after", &after);
    if (st != METARIM_STATUS_OK) {
        return fail(dev, st);
    }

    put_str(&l, "firmware: actions: before=");
    put_hex64(&l, before.digest);
    put_str(&l, " after=");
    put_hex64(&l, after.digest);
    put_end(&l);

    put_field(&l, "c-example: steps: before=", before.steps);
    put_field(&l, " after=", after.steps);
    put_end(&l);
    uint32_t stack_run = stack_high_water();
    uint32_t stack = stack_setup > stack_run ? stack_setup : stack_run;
    put_field(&l, "c-example: ram: static ", static_ram_bytes());
    put_field(&l, " B (device ", METARIM_DEVICE_BYTES);
    put_field(&l, " B) + stack high-water ", stack);
    put_field(&l, " B (set-up ", stack_setup);
    put_field(&l, ", episodes ", stack_run);
    put_field(&l, ") = ", (uint64_t)static_ram_bytes() + stack);
    put_str(&l, " B");
    put_end(&l);
    return (int)EXIT_OK;
}
