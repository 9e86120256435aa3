"""Data access. Repositories and query functions `flush()`; only the unit of work commits."""
