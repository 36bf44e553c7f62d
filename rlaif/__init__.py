"""rlaif: Constitutional AI / RLAIF data generation on DuckDB.

Importing this package stays cheap on purpose: torch, transformers, vLLM and Prefect are imported inside the
functions that need them, so the CLI answers ``--help`` without loading any of them.
"""

__version__ = "0.1.0"
