"""Hearing-aid processors: one algorithm per module, one contract (:mod:`processors.base`)."""
