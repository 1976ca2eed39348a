/* Arm semihosting for the C example (QEMU -semihosting-config enable=on): text out and the
 * run's exit status. */
#ifndef SEMIHOST_H
#define SEMIHOST_H

#include <stdint.h>

/* Exit statuses of a run (the Rust firmware's: firmware/app/src/exit.rs). */
#define EXIT_OK 0u
#define EXIT_CORE_ERROR 2u
#define EXIT_HARD_FAULT 3u
#define EXIT_BAD_BLOB 4u   /* no usable model blob (the Rust firmware's status too) */
#define EXIT_UNEXPECTED 5u

/* Write a NUL-terminated string to the host's console (SYS_WRITE0). */
void sh_write0(const char *s);

/* Stop the machine with exit status `code` (SYS_EXIT_EXTENDED, so QEMU exits with it). */
__attribute__((noreturn)) void sh_exit(uint32_t code);

#endif
