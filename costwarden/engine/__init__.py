"""The engine: pure and synchronous. Policy schema, loader and diagnostics, compiler, rule kinds,
evaluator, decisions, exemptions, model catalog and the pricing and ledger interfaces.

It imports only the standard library and light pure libraries (pydantic, PyYAML, the CEL
binding) — never a cloud or LLM SDK, a web framework or vLLM.
"""
