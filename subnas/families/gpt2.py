"""Placeholder until the family lands."""
FAMILIES: list = []
