"""Naive, obviously-correct references that fast code is tested against."""
