// SPDX-License-Identifier: GPL-2.0
/* Baseline: a well-formed GPL module using one ordinary export. Loads. */
#include <linux/module.h>
#include <linux/printk.h>

static int __init plain_init(void)
{
	pr_info("loaded\n");
	return 0;
}
module_init(plain_init);

MODULE_LICENSE("GPL");
