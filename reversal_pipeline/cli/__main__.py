"""``python -m reversal_pipeline.cli``."""

from reversal_pipeline.cli import main

main()
