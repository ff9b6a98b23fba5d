"""The collector's dashboard: one server-rendered page with inline SVG charts.

``data`` gathers what the page shows from the storage (the only module that reads it),
``svg`` draws charts, ``panels``, ``anomaly_panel`` and ``page`` lay out HTML and
``formats`` writes numbers (all pure), ``assets`` holds the inline stylesheet and
script, and ``route`` serves ``GET /`` and ``GET /dashboard/panels`` (see its docstring for the
sign-in and the Content-Security-Policy).
"""

from __future__ import annotations

from .route import DASHBOARD_PATH, PANELS_PATH, routes

__all__ = ["DASHBOARD_PATH", "PANELS_PATH", "routes"]
