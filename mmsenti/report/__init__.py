"""Reports rendered from a run's files: ``mmsenti report <run_dir>`` (:mod:`mmsenti.report.run_report`).

::

    from mmsenti.report import write_run_report

    write_run_report("logs/mosi_fusion/runs/2026-12-01_15-00-00")   # -> <run>/report/report.html + PNGs

Bench JSON → Pareto table/plot stays in :mod:`mmsenti.export.report` (``mmsenti report --pareto``).
"""

from mmsenti.report.run_report import is_run_folder, write_run_report  # noqa: F401
