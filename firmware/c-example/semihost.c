/* Arm semihosting: `bkpt 0xAB` with the operation in r0 and its argument in r1. */
#include "semihost.h"

#define SYS_WRITE0 0x04u
#define SYS_EXIT_EXTENDED 0x20u
/* ADP_Stopped_ApplicationExit: the application exited with the status that follows. */
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

static uint32_t semihost_call(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void sh_write0(const char *s)
{
    (void)semihost_call(SYS_WRITE0, s);
}

void sh_exit(uint32_t code)
{
    /* Plain SYS_EXIT gives only 0 or 1 on 32-bit Arm; the extended call carries the status. */
    const uint32_t block[2] = {ADP_STOPPED_APPLICATION_EXIT, code};
    (void)semihost_call(SYS_EXIT_EXTENDED, block);
    /* Only reached when no host handles semihosting. */
    for (;;) {
        __asm__ volatile("bkpt 0");
    }
}
