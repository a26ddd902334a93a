// SPDX-License-Identifier: GPL-2.0
/*
 * Built like plain.c, then build.py strips its modversions the way people do by hand:
 * objcopy --remove-section=__versions. A kernel with CONFIG_MODVERSIONS refuses it (ENOEXEC)
 * unless CONFIG_MODULE_FORCE_LOAD lets it in with a taint. Its own name, so it can be
 * loaded next to plain.ko.
 */
#include <linux/module.h>
#include <linux/printk.h>

static int __init no_versions_init(void)
{
	pr_info("loaded\n");
	return 0;
}
module_init(no_versions_init);

MODULE_LICENSE("GPL");
