/* glue.c - the Python half of the runtime (src/runtime/glue.py), compiled
 * into the binary so the runtime is one file that cannot lose its glue.
 *
 * The assembler includes glue.py verbatim (.incbin) between two symbols and
 * appends a NUL, so pyrt_glue_source is an ordinary C string. The Makefile
 * lists glue.py as a prerequisite of glue.o so edits rebuild it. */
#include "runtime/pyrt.h"

__asm__(
    ".section .rodata\n"
    ".global pyrt_glue_source\n"
    ".type pyrt_glue_source, @object\n"
    ".balign 16\n"
    "pyrt_glue_source:\n"
    ".incbin \"src/runtime/glue.py\"\n"
    ".byte 0\n"
    ".size pyrt_glue_source, . - pyrt_glue_source\n"
    ".previous\n");
