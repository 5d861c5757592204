"""The ``costwarden`` command. The only module that prints diagnostics and calls ``sys.exit``.

Exit codes: 0 ok, 1 enforced failures (or failing policy tests), 2 bad input or bad policy.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from costwarden import __version__
from costwarden.validate_cli import parse_now, print_policy_error, validate

if TYPE_CHECKING:
    from rich.console import Console

    from costwarden.engine.decision import Decision
    from costwarden.engine.evaluate import PolicySet

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

app = typer.Typer(
    name="costwarden",
    help="Policy-as-code governance for AI spend: one policy language for admission, CI, LLM calls and audits.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command()(validate)

PoliciesOpt = Annotated[
    list[Path] | None,
    typer.Option("--policies", "-p", help="Policy files or folders (repeatable). Default: the built-in library."),
]
FormatOpt = Annotated[str, typer.Option("--format", "-f", help="text or json")]


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print ``message`` as written (it quotes the user's input: '[/x]' is text, not markup)."""
    err = _console(stderr=True)
    err.print("[bold red]error[/]: ", end="", markup=True)
    err.print(message, markup=False)
    return typer.Exit(code)


def _load(paths: list[Path] | None) -> PolicySet:
    """Load policies or exit 2 printing every diagnostic."""
    from costwarden.api import load_policies
    from costwarden.errors import PolicyError

    try:
        return load_policies(*(paths or ()))
    except PolicyError as exc:
        print_policy_error(exc)
        raise typer.Exit(EXIT_BAD_INPUT) from None


@app.command("test")
def test_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Folders holding tests.yaml files")],
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show passing cases too")] = False,
) -> None:
    """Run the tests.yaml cases next to policies against their samples, offline."""
    from costwarden.errors import PolicyError
    from costwarden.testing import run_tests

    out = _console()
    try:
        report = run_tests(*paths)
    except PolicyError as exc:
        _console(stderr=True).print(exc.render(), markup=False)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    for case in report.cases:
        if case.passed and verbose:
            out.print(f"[green]PASS[/] {case.file}: {case.case}")
        elif not case.passed:
            out.print(f"[red]FAIL[/] {case.file}: {case.case}")
            for failure in case.failures:
                out.print(f"     {failure}", markup=False)
    for error in report.errors:
        out.print("[red]ERROR[/] ", end="", markup=True)
        out.print(error, markup=False, highlight=False)  # a rendered source line may hold '[...]'
    passed = sum(c.passed for c in report.cases)
    failed = len(report.cases) - passed
    out.print(f"{passed} passed, {failed} failed" + (f", {len(report.errors)} errors" if report.errors else ""))
    if report.errors and not report.cases:
        raise typer.Exit(EXIT_BAD_INPUT)
    raise typer.Exit(EXIT_OK if report.passed else EXIT_FAILED)


@app.command()
def explain(
    policy: Annotated[str, typer.Argument(help="Policy name")],
    policies: PoliciesOpt = None,
) -> None:
    """Show what a policy matches, how it is enforced on each surface, and its rules."""
    import yaml

    from costwarden.engine.decision import SURFACES

    loaded = _load(policies)
    found = loaded.get(policy)
    if found is None:
        from costwarden.engine.diagnostics import did_you_mean

        hint = did_you_mean(policy, loaded.names, what="policies") or ""
        raise _fail(f"no policy named '{policy}'. {hint}")
    doc = found.document
    out = _console()
    out.print(f"[bold]{found.name}[/] — ", end="")
    out.print(f"{found.title}  ({found.severity})", markup=False)  # the author's text, brackets and all
    out.print(f"defined in {found.file}:{found.line}", markup=False)
    if doc.metadata.description:
        out.print(doc.metadata.description, markup=False)
    out.print(f"\n[bold]subject[/]: {found.subject_type}")
    spec = doc.spec.model_dump(exclude_defaults=True, exclude={"rules", "enforcement", "subject", "onError"})
    if spec:
        out.print(yaml.safe_dump(spec, sort_keys=False).rstrip(), markup=False)
    effects = ", ".join(f"{s}: {found.effects[s]}" for s in SURFACES)
    out.print(f"[bold]enforcement[/]: {effects}; on error: {found.on_error}")
    out.print("\n[bold]rules[/]:")
    for rule in doc.spec.rules:
        body = rule.model_dump(exclude_defaults=True, exclude={"name"})
        out.print(f"  - {rule.name}")
        text = yaml.safe_dump(body, sort_keys=False).rstrip()
        out.print("\n".join("      " + line for line in text.splitlines()), markup=False)


@app.command()
def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to a file")] = None,
) -> None:
    """Print the JSON Schema of policy documents (for the YAML language server and editors)."""
    from costwarden.engine.schema import json_schema

    text = json.dumps(json_schema(), indent=2)
    if output:
        output.write_text(text + "\n", encoding="utf-8")
    else:
        sys.stdout.write(text + "\n")


@app.command("eval")
def eval_cmd(
    subject: Annotated[Path, typer.Option("--subject", "-s", help="Subject JSON, LLM call record, manifest or plan")],
    policies: PoliciesOpt = None,
    surface: Annotated[str, typer.Option(help="admission, ci, runtime or audit")] = "ci",
    fmt: FormatOpt = "text",
    now: Annotated[str | None, typer.Option(help="Evaluation time, ISO 8601 (default: now)")] = None,
) -> None:
    """Evaluate subjects from a file against the policies and print the decisions."""
    from costwarden.adapters.sources import subjects_from_path
    from costwarden.engine.decision import SURFACES
    from costwarden.errors import CostwardenError

    if surface not in SURFACES:
        raise _fail(f"unknown surface '{surface}'; surfaces: {', '.join(SURFACES)}")
    if fmt not in ("text", "json"):
        raise _fail(f"unknown format '{fmt}'; formats: text, json")
    when = parse_now(now)
    loaded = _load(policies)
    try:
        subjects = subjects_from_path(subject)
    except CostwardenError as exc:
        raise _fail(str(exc)) from None
    decisions = [loaded.evaluate(s, surface, now=when) for s in subjects]  # type: ignore[arg-type]
    if fmt == "json":
        payload: Any = [d.to_dict() for d in decisions]
        sys.stdout.write(json.dumps(payload[0] if len(payload) == 1 else payload, indent=2) + "\n")
    else:
        out = _console()
        for decision in decisions:
            _print_decision(out, decision)
    raise typer.Exit(EXIT_FAILED if any(not d.allowed for d in decisions) else EXIT_OK)


@app.command()
def check(
    paths: Annotated[list[str], typer.Argument(help="Files or folders; - reads stdin")],
    policies: PoliciesOpt = None,
    surface: Annotated[str, typer.Option(help="Surface whose enforcement applies")] = "ci",
    fmt: Annotated[str, typer.Option("--format", "-f", help="text, json, sarif, junit, github, policyreport")] = "text",
    output: Annotated[
        list[str] | None, typer.Option("--output", "-o", help="FORMAT=FILE, repeatable: also write FORMAT to FILE")
    ] = None,
    baseline: Annotated[Path | None, typer.Option(help="Accept the violations recorded in this baseline")] = None,
    write_baseline: Annotated[Path | None, typer.Option(help="Record current violations as the baseline")] = None,
    include_all: Annotated[bool, typer.Option("--all", help="Terraform: check unchanged resources too")] = False,
    progress: Annotated[bool, typer.Option(help="Progress bar (on a terminal, outside CI)")] = True,
) -> None:
    """Check manifests, Helm output, Terraform plans and LLM call logs before they are deployed."""
    from costwarden.enforcers.ci import read_baseline, run_check
    from costwarden.enforcers.ci import write_baseline as save_baseline
    from costwarden.enforcers.reporters import REPORTERS, render
    from costwarden.engine.decision import SURFACES
    from costwarden.errors import CostwardenError

    if surface not in SURFACES:
        raise _fail(f"unknown surface '{surface}'; surfaces: {', '.join(SURFACES)}")
    targets = _outputs(fmt, output or [], REPORTERS)
    loaded = _load(policies)
    try:
        accepted = read_baseline(baseline) if baseline else set()
    except CostwardenError as exc:
        raise _fail(str(exc)) from None
    with _progress(enabled=progress) as tick:
        report = run_check(
            paths,
            loaded,
            surface=surface,  # type: ignore[arg-type]
            include_all=include_all,
            baseline=accepted,
            progress=tick,
        )
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    for name, file in targets:
        text = render(name, report, color=color and file is None)
        if file is None:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            continue
        try:
            Path(file).write_text(text, encoding="utf-8")
        except OSError as exc:
            raise _fail(f"cannot write the {name} report to {file}: {exc.strerror or exc}") from None
    if write_baseline:
        try:
            count = save_baseline(report, write_baseline)
        except OSError as exc:
            raise _fail(f"cannot write the baseline to {write_baseline}: {exc.strerror or exc}") from None
        _console(stderr=True).print(f"wrote {count} findings to baseline {write_baseline}")
    raise typer.Exit(report.exit_code)


def _outputs(fmt: str, extra: list[str], known: dict[str, str]) -> list[tuple[str, str | None]]:
    targets: list[tuple[str, str | None]] = [(fmt, None)]
    for item in extra:
        name, sep, file = item.partition("=")
        if not sep or not file:
            raise _fail(f"--output takes FORMAT=FILE, got '{item}'")
        targets.append((name, file))
    for name, _ in targets:
        if name not in known:
            raise _fail(f"unknown format '{name}'; formats: {', '.join(known)}")
    return targets


@contextlib.contextmanager
def _progress(*, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on an interactive terminal only: nothing extra in CI logs or pipes."""
    if not enabled or not sys.stderr.isatty() or os.environ.get("CI"):
        yield None
        return
    from rich.progress import Progress

    with Progress(transient=True, console=_console(stderr=True)) as bar:
        task = bar.add_task("checking", total=None)

        def tick(done: int, total: int) -> None:
            if total >= 20:
                bar.update(task, completed=done, total=total)

        yield tick


from costwarden.webhook.cli import webhook_app  # noqa: E402  (imports only typer: --version stays fast)

app.add_typer(webhook_app, name="webhook")

@app.command()
def tiers(
    models: Annotated[list[str] | None, typer.Argument(help="Models to place in a tier")] = None,
    policies: PoliciesOpt = None,
    fmt: FormatOpt = "text",
) -> None:
    """The model tiers, cheapest first, as the policies' catalog documents layer them; with models, their tiers."""
    if fmt not in ("text", "json"):
        raise _fail(f"unknown format '{fmt}'; formats: text, json")
    catalog = _load(policies).catalog
    placed = {m: (t.name if (t := catalog.tier_of(m)) else None) for m in models or ()}
    if fmt == "json":
        listed = [{"name": t.name, "models": list(t.models), "downgradeTo": dict(t.downgrade_to)}
                  for t in catalog.tiers]
        sys.stdout.write(json.dumps({"tiers": listed, "models": placed}, indent=2) + "\n")
        return
    from rich.markup import escape

    out = _console()
    for t in catalog.tiers:
        targets = ", ".join(f"{p}: {m}" for p, m in t.downgrade_to.items()) or "-"
        out.print(f"[bold]{escape(t.name)}[/]  {escape(', '.join(t.models))}\n  downgrade to: {escape(targets)}")
    for model, name in placed.items():
        out.print(f"{model}: {name or 'in no tier'}", markup=False)


from costwarden.budget_cli import budget_app  # noqa: E402

app.add_typer(budget_app, name="budget")


from costwarden.vllm_cli import RAW_ARGS, vllm_app  # noqa: E402

app.add_typer(vllm_app, name="vllm")


_STYLE = {"pass": "green", "fail": "red", "warn": "yellow", "error": "magenta", "skip": "dim"}


def _print_decision(out: Console, decision: Decision) -> None:
    from rich.markup import escape

    ref = decision.subject
    where = f"{ref.file}:{ref.line}" if ref.file and ref.line else (ref.file or "")
    colour = "green" if decision.allowed else "red"
    title = f"{ref.provider}/{ref.kind} {ref.namespace + '/' if ref.namespace else ''}{ref.name}"
    out.print(f"[bold]{escape(title)}[/] {escape(where)} → [bold {colour}]{decision.verdict}[/] ({decision.surface})")
    for r in decision.results:
        style = _STYLE.get(r.result, "")
        effect = f" \\[{r.effect}]" if r.result in ("fail", "error") else ""
        out.print(f"  [{style}]{r.result:5}[/]{effect} {r.policy}/{r.rule}: ", end="")
        out.print(r.message, markup=False)
        if r.fix:
            out.print(f"        fix: {r.fix.description}", markup=False)
        if r.savings_usd_month:
            out.print(f"        saves ~${r.savings_usd_month:,.2f}/month", markup=False)
        elif r.savings_usd_per_call:
            out.print(f"        saves ~${r.savings_usd_per_call:,.6f}/call", markup=False)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script; ``--version`` answers before anything is imported."""
    args = sys.argv[1:] if argv is None else argv
    if args in (["--version"], ["-V"], ["version"]):
        sys.stdout.write(f"costwarden {__version__}\n")
        return
    RAW_ARGS[:] = args
    app(args=args, prog_name="costwarden")


if __name__ == "__main__":
    main()
