"""Pydantic payload and reply models, one module per aggregate."""
