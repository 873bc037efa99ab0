"""The model layer's outside-world half: backends, request cache, ledger, limits.

Pure contracts live in `gravity_core.llm`; everything here talks to an SDK, a model
file, SQLite or parquet. Tasks receive a ready `ModelClient` (built by `factory`).
"""
