"""Operator tests.

This file matters: without it, pytest's importlib mode names these modules
`operator.tests.<name>` and imports the `operator/` directory as the parent package, which
replaces the standard library's `operator` module for the rest of the run.
"""
