"""``costwarden webhook serve | certs | manifests`` — wired into the main command with
``app.add_typer(webhook_app, name="webhook")``. Exit codes as the main command: 0 ok, 2 bad input.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

EXIT_BAD_INPUT = 2

webhook_app = typer.Typer(
    help="Kubernetes admission webhook: serve it, make its TLS certificates, print its install manifests.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(EXIT_BAD_INPUT)


@webhook_app.command()
def serve(
    policies: Annotated[Path, typer.Option("--policies", "-p", help="Policy folder to enforce and watch")],
    tls_cert: Annotated[Path, typer.Option("--tls-cert", help="Serving certificate (PEM), reloaded when it changes")],
    tls_key: Annotated[Path, typer.Option("--tls-key", help="Private key of the certificate (PEM)")],
    port: Annotated[int, typer.Option(help="HTTPS port")] = 8443,
    workers: Annotated[int, typer.Option(help="Worker processes")] = 1,
    host: Annotated[str, typer.Option(help="Address to listen on")] = "0.0.0.0",
    deadline: Annotated[float, typer.Option(help="Evaluation deadline in seconds (below the webhook timeout)")] = 2.0,
    max_body: Annotated[int, typer.Option(help="Largest accepted request body in bytes")] = 3 * 1024 * 1024,
    log_level: Annotated[str, typer.Option(help="critical, error, warning, info or debug")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request")] = False,
    allow_existing_violations: Annotated[bool, typer.Option(
        help="On UPDATE, warn instead of deny (and do not patch) when the old object already had the violation, "
             "no worse (Kyverno's default)")] = True,
) -> None:
    """Serve /validate, /mutate, /healthz, /readyz and /metrics over HTTPS (TLS 1.2+)."""
    from costwarden.webhook.server import serve as run_server

    try:
        run_server(policies, tls_cert, tls_key, port=port, workers=workers, host=host, deadline_s=deadline,
                   max_body_bytes=max_body, log_level=log_level, access_log=access_log,
                   allow_existing_violations=allow_existing_violations)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from None


@webhook_app.command()
def certs(
    service: Annotated[str, typer.Option(help="Service name of the webhook")],
    namespace: Annotated[str, typer.Option(help="Namespace of the Service")],
    out: Annotated[Path, typer.Option(help="Folder to write ca.crt, tls.crt and tls.key to")],
    days: Annotated[int, typer.Option(help="Validity of the CA and the certificate")] = 365,
) -> None:
    """Generate a CA and a serving certificate for the webhook's Service (and localhost)."""
    from costwarden.webhook.tls import generate_certs

    if days < 1:
        raise _fail("--days must be at least 1")
    try:
        files = generate_certs(service, namespace, out, days=days)
    except OSError as exc:
        raise _fail(f"cannot write certificates to {out}: {exc.strerror or exc}") from None
    for path in (files.ca_cert, files.cert, files.key):
        typer.echo(str(path))


@webhook_app.command()
def manifests(
    namespace: Annotated[str, typer.Option(help="Namespace to install the webhook in")] = "costwarden",
    image: Annotated[str | None, typer.Option(help="Container image with costwarden[webhook]")] = None,
    policies: Annotated[Path | None, typer.Option("--policies", "-p", help="Policy folder (default: built-in)")] = None,
    certs_dir: Annotated[Path | None, typer.Option(
        "--certs", help="Folder from 'webhook certs': sets caBundle and adds the TLS Secret")] = None,
) -> None:
    """Print the install manifests (YAML): Namespace, RBAC, ConfigMap, Deployment, PDB, Service, webhooks."""
    import yaml

    from costwarden.errors import PolicyError
    from costwarden.webhook.manifests import DEFAULT_IMAGE, render_manifests, unmapped_kinds

    pems: dict[str, bytes] = {}
    if certs_dir is not None:
        try:
            pems = {name: (certs_dir / name).read_bytes() for name in ("ca.crt", "tls.crt", "tls.key")}
        except OSError as exc:
            raise _fail(f"cannot read certificates: {exc}") from None
    from costwarden.api import load_policies

    try:
        loaded = load_policies(*((policies,) if policies else ()))
    except PolicyError as exc:
        typer.echo(exc.render(), err=True)
        raise typer.Exit(EXIT_BAD_INPUT) from None
    try:
        objects = render_manifests(namespace, image or DEFAULT_IMAGE, policies, pems.get("ca.crt"),
                                   tls_cert_pem=pems.get("tls.crt"), tls_key_pem=pems.get("tls.key"), policies=loaded)
    except ValueError as exc:  # the ConfigMap limit, or two files with one key
        raise _fail(str(exc)) from None
    for kind in unmapped_kinds(loaded):
        typer.echo(f"warning: no webhook rule for kind {kind}; it is judged in CI only", err=True)
    sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=False))


__all__ = ["webhook_app"]
