"""Booting real kernels in qemu to insmod modules, and boot-check: the booted kernel's verdicts
beside kabigate's."""
