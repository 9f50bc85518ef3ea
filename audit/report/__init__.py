"""`python -m audit.report`: the bias report.

Computation (`groups`, `log_section`, `offline_section`, `popularity`) is kept
apart from rendering (`render`). Every by-group number goes through
Fairlearn's MetricFrame, with its bootstrap for confidence intervals.
"""
from audit.report.build import ReportError, build_report

__all__ = ["ReportError", "build_report"]
