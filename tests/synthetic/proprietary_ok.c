// SPDX-License-Identifier: GPL-2.0
/* A proprietary module using only non-GPL exports: loads, taints the kernel (P). */
#include <linux/module.h>
#include <linux/printk.h>

static int __init proprietary_ok_init(void)
{
	pr_info("loaded\n");
	return 0;
}
module_init(proprietary_ok_init);

MODULE_LICENSE("Proprietary");
