"""The fuzz harness (run.py): targets, a structure-aware mutator, a real-seed corpus."""
