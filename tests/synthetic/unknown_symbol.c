// SPDX-License-Identifier: GPL-2.0
/* A strong reference to a symbol nobody exports: "Unknown symbol" (ENOENT). */
#include <linux/module.h>

extern void kabigate_no_such_symbol(void);

static int __init unknown_symbol_init(void)
{
	kabigate_no_such_symbol();
	return 0;
}
module_init(unknown_symbol_init);

MODULE_LICENSE("GPL");
