"""The package's Python logs in Dagster's event log, so they show on the run page.

"lease renewal failed" or "outcome not written" logged by the core (plain
``logging``, no Dagster there) would otherwise reach only the process's
stderr. Dagster captures the loggers named in the instance's
``python_logs.managed_python_loggers``; every ``reversal_pipeline.*`` logger
propagates to ``reversal_pipeline``. The instance template (``dagster.yaml``)
carries the same section; the in-process instances (``run-job`` without
``DAGSTER_HOME``, tests) take it from here.
"""

from typing import Any

MANAGED_PYTHON_LOGGERS = ["reversal_pipeline"]
PYTHON_LOG_LEVEL = "INFO"

#: The instance settings (``dagster.yaml`` keys) that turn the capture on.
PYTHON_LOGS_SETTINGS: dict[str, Any] = {
    "python_logs": {
        "managed_python_loggers": MANAGED_PYTHON_LOGGERS,
        "python_log_level": PYTHON_LOG_LEVEL,
    }
}
