"""Install-time tools on a system's /lib/modules: weak-modules (which out-of-tree modules built
for one kernel are linked into another's weak-updates/) and preflight (before a kernel update:
which installed modules will load on it). They work on files, not on a store: preflight may be
given a Store to suggest stored builds, and imports none."""
