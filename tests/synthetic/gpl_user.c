// SPDX-License-Identifier: GPL-2.0
/*
 * A GPL module using a GPL-only export (cpu_mitigations_off) and a proprietary module's export:
 * inherit_taint() (kernel/module/main.c, since 5.11) refuses the proprietary module's symbol
 * to a module using GPL-only symbols. modpost does not check this.
 */
#include <linux/cpu.h>
#include <linux/module.h>

int kabigate_prop_provided(int value);

static int __init gpl_user_init(void)
{
	return cpu_mitigations_off() ? 0 : kabigate_prop_provided(-1);
}
module_init(gpl_user_init);

MODULE_LICENSE("GPL");
