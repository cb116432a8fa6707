"""``stripe-emulator``: serve the stateful Stripe emulator."""

from __future__ import annotations

from pathlib import Path

import click

from reversal_pipeline.environment import STRIPE_API_KEY_ENV


@click.command("stripe-emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=12111, show_default=True, type=int)
@click.option("--latency-ms", default=0.0, show_default=True, type=float)
@click.option(
    "--rate-limit",
    "rate_limit_per_second",
    default=None,
    type=int,
    help="Answer 429 beyond this many requests per second.",
)
@click.option(
    "--error-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Fraction of requests answered 500.",
)
@click.option("--seed", default=None, type=int, help="Seed of the fault generator.")
@click.option(
    "--state-file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help=(
        "Load transfers and reversals from this JSON snapshot at start (if it exists) and "
        "save them there on exit and on POST /_emulator/state/save."
    ),
)
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    envvar=STRIPE_API_KEY_ENV,
    help=(
        "An API key the emulator accepts (repeatable; default: $STRIPE_API_KEY). Like Stripe,"
        " it answers 401 to any other key."
    ),
)
@click.option(
    "--accept-any-key",
    is_flag=True,
    default=False,
    help="Accept any well-formed sk_/rk_ key instead (ad-hoc use).",
)
def stripe_emulator_command(
    host: str,
    port: int,
    latency_ms: float,
    rate_limit_per_second: int | None,
    error_rate: float,
    seed: int | None,
    state_file: Path | None,
    api_keys: tuple[str, ...],
    accept_any_key: bool,
) -> None:
    """Serve the stateful Stripe emulator (point STRIPE_API_BASE at it)."""
    if not api_keys and not accept_any_key:
        raise click.UsageError(
            "give the key clients will use (--api-key or STRIPE_API_KEY), or --accept-any-key"
        )
    from reversal_pipeline.stripe_emulator.server import run_forever
    from reversal_pipeline.stripe_emulator.state import SnapshotError

    click.echo(f"Stripe emulator on http://{host}:{port} (Ctrl-C to stop)", err=True)
    try:
        run_forever(
            host=host,
            port=port,
            state_file=state_file,
            api_keys=api_keys,
            accept_any_key=accept_any_key,
            latency_ms=latency_ms,
            rate_limit_per_second=rate_limit_per_second,
            error_rate=error_rate,
            seed=seed,
        )
    except SnapshotError as exc:
        raise click.ClickException(f"cannot load --state-file: {exc}") from None
