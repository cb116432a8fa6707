"""``stripe-emulator``: serve the stateful Stripe emulator."""

from __future__ import annotations

import click


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
def stripe_emulator_command(
    host: str,
    port: int,
    latency_ms: float,
    rate_limit_per_second: int | None,
    error_rate: float,
    seed: int | None,
) -> None:
    """Serve the stateful Stripe emulator (point STRIPE_API_BASE at it)."""
    from reversal_pipeline.stripe_emulator.server import run_forever

    click.echo(f"Stripe emulator on http://{host}:{port} (Ctrl-C to stop)", err=True)
    run_forever(
        host=host,
        port=port,
        latency_ms=latency_ms,
        rate_limit_per_second=rate_limit_per_second,
        error_rate=error_rate,
        seed=seed,
    )
