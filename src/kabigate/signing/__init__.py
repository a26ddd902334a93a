"""Module signing: keys and certificates (keys), the CMS signature sign-file appends (cms), a module
file read on demand (image), signing files (sign), and the kernel's verification against its trusted
keys (verify)."""
