// SPDX-License-Identifier: GPL-2.0
/* Imports namespace KABIGATE_TEST and calls provider.ko's kabigate_provided. */
#include <linux/module.h>
#include "provider.h"

static int __init consumer_init(void)
{
	return kabigate_provided(-1);
}
module_init(consumer_init);

MODULE_LICENSE("GPL");
MODULE_IMPORT_NS(KABIGATE_TEST);
