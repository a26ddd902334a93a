// SPDX-License-Identifier: GPL-2.0
/*
 * A proprietary module calling cpu_mitigations_off(), an EXPORT_SYMBOL_GPL of vmlinux:
 * find_symbol() hides GPL-only exports from it, so the kernel says "Unknown symbol".
 * modpost refuses it too; the fixture builds it with modpost's errors ignored.
 */
#include <linux/cpu.h>
#include <linux/module.h>
#include <linux/printk.h>

static int __init proprietary_gpl_init(void)
{
	pr_info("mitigations %s\n", cpu_mitigations_off() ? "off" : "on");
	return 0;
}
module_init(proprietary_gpl_init);

MODULE_LICENSE("Proprietary");
