"""Building driver packages from source against a kernel's build tree, with the field's own tools
(dkms, make -C KDIR M=), in a sandbox (sandbox.py), and what came of it (result.py)."""
