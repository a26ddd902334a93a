// SPDX-License-Identifier: GPL-2.0
/* Exports kabigate_provided into namespace KABIGATE_TEST, for consumer.ko. */
#include <linux/module.h>
#include "provider.h"

#ifdef KABIGATE_PROVIDER_V2
long kabigate_provided(long value)
#else
int kabigate_provided(int value)
#endif
{
	return value + 1;
}
EXPORT_SYMBOL_NS_GPL(kabigate_provided, KABIGATE_TEST);

MODULE_LICENSE("GPL");
