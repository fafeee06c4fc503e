"""Self-contained HTML reports of training runs and of the demo."""
from facetrain.report.html import HtmlReport
from facetrain.report.run_report import write_run_report

__all__ = ["HtmlReport", "write_run_report"]
