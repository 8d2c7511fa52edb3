"""``python -m mlops.dashboards.serve [streamlit run options]``: the dashboard, warm before its first visitor.

``streamlit run`` imports what a page needs when the first browser session runs it, so the first view
after a start paid ~3.5 s of imports (MLflow, scikit-learn through the deployment code, Altair) and
MLflow's store start-up, on top of reading the log. This entry point does that work before the
server accepts a connection, then hands over to ``streamlit run`` in the same process; the launcher
waits for the health endpoint, which answers only after it.
"""

from __future__ import annotations

import logging
import sys

from mlops.config import PROJ_ROOT

PAGE = PROJ_ROOT / "mlops" / "dashboards" / "mlops_monitoring_dashboard.py"
logger = logging.getLogger(__name__)


def warm_up() -> None:
    """Import the page's modules and open the tracking store (a store that is down is not fatal here)."""
    import altair  # noqa: F401
    import mlflow

    from mlops.config import load_settings
    from mlops.dashboards import charts, sources  # noqa: F401
    from mlops.monitoring import alerts, canary, drift, stats, system  # noqa: F401

    try:
        mlflow.MlflowClient(load_settings().tracking_uri).search_experiments(max_results=1)
    except Exception as exc:  # the page shows the problem to its visitor; start anyway
        logger.warning("warm-up could not open the MLflow store: %s", exc)


def main() -> None:
    warm_up()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", str(PAGE), *sys.argv[1:]]
    cli.main()


if __name__ == "__main__":
    main()
