// SPDX-License-Identifier: GPL-2.0
/* A weak reference to a symbol nobody exports: resolve_symbol() lets it stay NULL. Loads. */
#include <linux/module.h>

extern void kabigate_no_such_symbol(void) __attribute__((weak));

static int __init weak_missing_init(void)
{
	if (kabigate_no_such_symbol)
		kabigate_no_such_symbol();
	return 0;
}
module_init(weak_missing_init);

MODULE_LICENSE("GPL");
