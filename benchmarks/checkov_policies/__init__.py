"""Checkov custom checks used by benchmarks/check.py (Checkov loads this folder only with an __init__.py)."""
