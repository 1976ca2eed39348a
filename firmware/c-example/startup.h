/* What the start-up code measures for main. */
#ifndef STARTUP_H
#define STARTUP_H

#include <stdint.h>

/* Paint the free stack below the caller's frame (reset does it once before main); then
 * stack_high_water measures from here on. */
void paint_stack(void);

/* Bytes of stack used at the deepest point since the last paint_stack (stack painting; a lower bound only if
 * a live word happened to equal the paint pattern). */
uint32_t stack_high_water(void);

/* Static RAM: .data + .bss. */
uint32_t static_ram_bytes(void);

#endif
