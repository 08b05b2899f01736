"""Open Data Contract Standard (v3) contracts for the store and the exchange formats; see curation.contracts."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
