// SPDX-License-Identifier: GPL-2.0
/*
 * Exports cpu_mitigations_auto_nosmt, which vmlinux already exports: the kernel refuses the
 * module with "exports duplicate symbol". modpost refuses it too ("exported twice"); built
 * with modpost's errors ignored. The prototype matches linux/cpu.h so it compiles.
 */
#include <linux/cpu.h>
#include <linux/module.h>

bool cpu_mitigations_auto_nosmt(void)
{
	return false;
}
EXPORT_SYMBOL(cpu_mitigations_auto_nosmt);

MODULE_LICENSE("GPL");
