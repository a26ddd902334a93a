/* SPDX-License-Identifier: GPL-2.0 */
#ifndef _LINUX_SEED_H
#define _LINUX_SEED_H
#include <linux/types.h>
#include "local.h"
#ifndef __KERNEL__
#include <linux/userspace_only.h>
#else
#include <linux/kernel_only.h>
#endif
#if defined(__ASSEMBLY__)
#include <asm/asm.h>
#endif
struct seed {
	int a;
	union { long b; void *c; };
};
typedef struct seed seed_t;
typedef int (*seed_fn)(struct seed *);
typedef unsigned long seed_bits[4];
enum seed_kind { SEED_A, SEED_B = 5 };
#endif
