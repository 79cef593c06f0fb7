"""Shared foundations every stage may use: errors, atomic writes and the cache folder, figure
files, the package version.

May import: nothing else of interp.
"""
