/* A QEMU 7.2 TCG plugin counting executed guest instructions (optionally only those with
 * lo <= pc < hi), so a clean clone can count instructions. With profile=FILE it also writes,
 * at exit, one line per translated block that ran: "START_PC INSNS EXECUTIONS" (hex, decimal,
 * decimal; a block translated twice has two lines), which scripts/lib/insn-profile.py maps to
 * functions. Build: gcc -O2 -shared -fPIC -o libinsncount.so insncount.c; usage:
 * docs/TOOLCHAINS.md. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb; struct qemu_plugin_insn; typedef struct qemu_info_t qemu_info_t;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*tb_trans_cb_t)(qemu_plugin_id_t, struct qemu_plugin_tb *);
typedef void (*udata_cb_t)(qemu_plugin_id_t, void *);
extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, tb_trans_cb_t);
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, enum qemu_plugin_op, void *, uint64_t);
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
extern uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, udata_cb_t, void *);
extern void qemu_plugin_outs(const char *);
__attribute__((visibility("default"))) int qemu_plugin_version = 1;
static uint64_t count, lo = 0, hi = UINT64_MAX;   /* optional args lo=ADDR,hi=ADDR */
/* profile=FILE: every translated block, its size and an execution counter (blocks are never
 * freed: a firmware run translates a few thousand). */
struct block { uint64_t pc, insns, runs; struct block *next; };
static struct block *blocks;
static const char *profile;
static int profile_failed;
static void tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    size_t n = qemu_plugin_tb_n_insns(tb), k = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t pc = qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, i));
        if (pc >= lo && pc < hi) k++;
    }
    if (k) qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &count, k);
    if (profile && n) {
        struct block *b = calloc(1, sizeof *b);
        if (!b) { profile_failed = 1; return; }
        b->pc = qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, 0));
        b->insns = n;
        b->next = blocks;
        blocks = b;
        qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &b->runs, 1);
    }
}
static void write_profile(void) {
    FILE *f = fopen(profile, "w");
    if (!f) { qemu_plugin_outs("insncount: cannot write the profile\n"); return; }
    /* An incomplete profile is marked so that no one reads it as complete. */
    if (profile_failed) fprintf(f, "incomplete: out of memory\n");
    for (struct block *b = blocks; b; b = b->next)
        if (b->runs)
            fprintf(f, "%llx %llu %llu\n", (unsigned long long)b->pc,
                    (unsigned long long)b->insns, (unsigned long long)b->runs);
    if (fclose(f)) qemu_plugin_outs("insncount: cannot write the profile\n");
}
static void at_exit(qemu_plugin_id_t id, void *p) {
    char buf[64]; snprintf(buf, sizeof buf, "insns: %llu\n", (unsigned long long)count);
    qemu_plugin_outs(buf);
    if (profile) write_profile();
}
__attribute__((visibility("default")))
int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
    for (int i = 0; i < argc; i++) {
        if (!strncmp(argv[i], "lo=", 3)) lo = strtoull(argv[i] + 3, NULL, 0);
        else if (!strncmp(argv[i], "hi=", 3)) hi = strtoull(argv[i] + 3, NULL, 0);
        else if (!strncmp(argv[i], "profile=", 8) && argv[i][8]) profile = argv[i] + 8;
        else { fprintf(stderr, "insncount: unknown arg %s\n", argv[i]); return -1; }
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_trans);
    qemu_plugin_register_atexit_cb(id, at_exit, NULL);
    return 0;
}
