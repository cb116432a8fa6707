"""A missing variable is one line saying what and how, exit non-zero, nothing started."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from reversal_pipeline.cli import main
from reversal_pipeline.cli.group import REFUSED_EXIT_CODE
from reversal_pipeline.devserver.home import template_path
from reversal_pipeline.errors import ConfigurationError

#: Commands that call Stripe, with arguments that are otherwise valid.
STRIPE_COMMANDS = [
    ["run-job"],
    ["reconcile", "--day", "2026-01-05"],
    ["resolve", "--id", "1", "--reversal", "trr_1", "--reason", "INC-1"],
]
#: Commands that run a job in the DAGSTER_HOME instance when it is set.
INSTANCE_COMMANDS = STRIPE_COMMANDS[:2]


@pytest.fixture
def no_embedded_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refusing must come first: starting the embedded PostgreSQL would be a bug here."""

    def refuse(*args: object, **kwargs: object) -> str:
        raise AssertionError("the command started the embedded PostgreSQL before refusing")

    monkeypatch.setattr("reversal_pipeline.db.embedded.start_embedded_server", refuse)


def invoke(args: list[str], env: dict[str, str | None]) -> Result:
    base: dict[str, str | None] = {
        "STRIPE_API_KEY": None,
        "DAGSTER_HOME": None,
        "DAGSTER_PG_URL": None,
        "REVERSAL_DATABASE_URL": None,
    }
    return CliRunner().invoke(main, args, env={**base, **env})


def assert_one_clear_line(result: Result, *words: str) -> None:
    assert result.exit_code == REFUSED_EXIT_CODE, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.usefixtures("no_embedded_server")
@pytest.mark.parametrize("args", STRIPE_COMMANDS, ids=lambda a: a[0])
def test_without_stripe_key_says_what_and_how(args: list[str]) -> None:
    result = invoke(args, {})
    assert_one_clear_line(result, "STRIPE_API_KEY is unset", "export STRIPE_API_KEY=sk_test_")


@pytest.mark.usefixtures("no_embedded_server")
@pytest.mark.parametrize("args", INSTANCE_COMMANDS, ids=lambda a: a[0])
def test_dagster_home_without_storage_url_says_what_and_how(
    args: list[str], tmp_path: Path
) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_bytes(template_path().read_bytes())

    result = invoke(args, {"STRIPE_API_KEY": "sk_test_x", "DAGSTER_HOME": str(home)})

    assert_one_clear_line(
        result, f"DAGSTER_HOME is {home}", "DAGSTER_PG_URL", "export DAGSTER_PG_URL=", "unset"
    )


def test_every_command_gets_the_one_line_treatment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The group catches for every command, including ones added later."""
    for name, command in main.commands.items():
        assert command.callback is not None

        def fail(*args: object, _name: str = name, **kwargs: object) -> None:
            raise ConfigurationError(f"{_name} is missing something\nsecond line")

        monkeypatch.setattr(command, "callback", fail)
        result = CliRunner().invoke(main, [name])
        assert_one_clear_line(result, f"{name} is missing something second line")


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"reversal-pipeline, version {version('reversal_pipeline')}"
