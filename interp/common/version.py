"""The package version, recorded in every export's provenance."""

__version__ = "0.1.0"
