"""Shared code of the OOD reproduction kit."""
