"""kabigate: will this kernel module load on that kernel, and if not, why?"""

__version__ = "0.1.0"
