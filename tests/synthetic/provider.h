/* SPDX-License-Identifier: GPL-2.0 */
/* The one symbol provider.ko exports. KABIGATE_PROVIDER_V2 changes its prototype, and so its
 * modversions CRC, as an incompatible rebuild of the provider would. */
#ifdef KABIGATE_PROVIDER_V2
long kabigate_provided(long value);
#else
int kabigate_provided(int value);
#endif
