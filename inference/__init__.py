"""Switchboard's inference core: task classifier, router and model backends.

Nothing in this package imports Discord; it is usable from the command line, tests and benchmarks.
"""
