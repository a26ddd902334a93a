// SPDX-License-Identifier: GPL-2.0
/* A proprietary module exporting a plain (non-GPL) symbol, for gpl_user.ko. */
#include <linux/module.h>

int kabigate_prop_provided(int value)
{
	return value + 1;
}
EXPORT_SYMBOL(kabigate_prop_provided);

MODULE_LICENSE("Proprietary");
