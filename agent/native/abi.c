/* The library's version, checked by agent/native/__init__.py when it loads the library.
 * Raise it with KERNEL_ABI there whenever a state layout the kernels share with Python changes (a changed
 * signature gets a new function name instead): a build of other sources is then refused, not misused. */
#include <stdint.h>

int32_t iotguard_kernel_abi(void) { return 2; }
