"""Use cases spanning several models. Like repositories, services flush but never commit."""
