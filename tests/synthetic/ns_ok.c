// SPDX-License-Identifier: GPL-2.0
/* Uses dma_buf_get(), exported by vmlinux into namespace DMA_BUF, and imports it. Loads. */
#include <linux/dma-buf.h>
#include <linux/err.h>
#include <linux/module.h>

static int __init ns_ok_init(void)
{
	/* fd -1 is never a dma-buf: a harmless call that returns ERR_PTR(-EBADF). */
	return IS_ERR(dma_buf_get(-1)) ? 0 : -EINVAL;
}
module_init(ns_ok_init);

MODULE_LICENSE("GPL");
MODULE_IMPORT_NS(DMA_BUF);
