"""``expr``: a CEL expression over ``subject`` that must be true, with a message.

A failure measures what the expression read (``actual``: ``{"subject.workload.replicas": 12}``,
see :meth:`CelProgram.read_values`), not just ``false``: on an UPDATE, the old object's failure is
pre-existing only while those values are unchanged, so ``kubectl scale`` from 12 to 500 replicas
under ``subject.workload.replicas <= 10`` is not excused as "already failing"
(:mod:`costwarden.enforcers.existing_violations`)."""

from __future__ import annotations

from pydantic import Field

from costwarden.engine.cel import CelCompileError, compile_cel
from costwarden.engine.decision import Outcome
from costwarden.engine.rules.base import (
    Check,
    CompileEnv,
    EvalContext,
    RuleCompileError,
    RuleKind,
    RuleParams,
)
from costwarden.engine.subjects import Subject
from costwarden.engine.unknown_reads import unknown_tag_read


class Expr(RuleParams):
    cel: str = Field(description="CEL over `subject`; the rule passes when it is true")
    message: str = Field(description="shown when the expression is false")


def compile(params: Expr, env: CompileEnv) -> Check:
    try:
        program = compile_cel(params.cel)
    except CelCompileError as exc:
        raise RuleCompileError(f"invalid CEL: {exc.message}", ("cel",), code="invalid-cel", offset=exc.offset,
                               hint=exc.hint) from exc
    message = params.message

    def check(subject: Subject, ctx: EvalContext) -> Outcome:
        unknown = unknown_tag_read(program, subject)
        if unknown is not None:  # a plan cannot show it yet: neither a pass nor a proven failure
            return Outcome("fail", f"cannot be judged at plan time: {params.cel} reads {unknown}, "
                           "known only after apply", path="subject", expected=params.cel, advisory=True)
        view = subject.as_cel
        if program.evaluate_bool(view):
            return Outcome("pass", f"{params.cel} holds", path="subject")
        return Outcome("fail", message, path="subject", expected=params.cel, actual=program.read_values(view))

    return check


KIND = RuleKind(
    "expr",
    Expr,
    ("resource", "llm_call", "serving_config"),
    compile,
    "a CEL expression over the subject that must hold",
)
