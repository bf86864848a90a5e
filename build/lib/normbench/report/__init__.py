"""The report: finished runs' results.json -> tables, figures and one computed sentence per entry.

Reads files only and imports no torch, so a sweep can be summarized where it was copied to.
"""
