"""Adapters: raw input from one source (an SDK request, a plan, a manifest) → engine subjects.

Each module here knows one source's quirks so the engine does not have to. Adapters import
their SDKs lazily; importing ``costwarden.adapters`` itself imports nothing heavy.
"""
