"""The throwaway embedded server really goes away when its block ends."""

from __future__ import annotations

from pathlib import Path

import psutil
import sqlalchemy as sa

from reversal_pipeline.db.embedded import throwaway_embedded_server


def test_throwaway_server_stops_its_postmaster_and_deletes_its_folder() -> None:
    with throwaway_embedded_server("rp-test-throwaway-") as url:
        engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        with engine.connect() as connection:
            data_dir = connection.execute(sa.text("SHOW data_directory")).scalar_one()
        engine.dispose()
        # The postmaster's pid from its own pid file: the backend that served the
        # query may already have exited (NullPool), so asking for its parent raced.
        postmaster_pid = int((Path(data_dir) / "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(postmaster_pid)
        assert postmaster.is_running()

    # Before the fix the folder went first and the postmaster outlived the process.
    assert not Path(data_dir).exists()
    try:
        postmaster.wait(timeout=10)
    except psutil.TimeoutExpired:
        raise AssertionError(f"postmaster {postmaster.pid} still running") from None
    assert not postmaster.is_running()
