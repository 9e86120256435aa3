"""HTTP layer (FastAPI). Every id in a URL or a body is the public UUID."""
