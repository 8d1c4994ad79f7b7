"""Adapters that run excite inside other engines (each needs its extra): `ray` for Ray Data batch inference."""
