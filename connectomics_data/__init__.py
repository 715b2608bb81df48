"""connectomics_data: fast, exact, reproducible data loading for connectomics EM volumes."""

__version__ = "0.1.0"
