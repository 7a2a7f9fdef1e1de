"""What a run leaves behind, and how it is shown.

A run directory ``runs/<scenario>-<timestamp>/`` holds ``config.toml`` (the resolved
scenario), ``metrics.jsonl`` (one row per round), ``summary.json``, ``accuracy.png``,
``head.npz`` (the final shared arrays), ``checkpoint/`` and ``flower.log``.

If you look for:
- a run directory's life (``.incomplete``, ``.failed``, ``.interrupted``, the lock):
  ``rundir.py``;
- the checkpoint a run resumes from: ``checkpoint.py``;
- the metrics row, its schema and the wire names it is made from: ``rows.py``;
- writing the rows and the summary as a run goes: ``runlog.py``;
- the summary and the console's tables: ``summary.py``; the plots: ``plots.py``;
- runs side by side: ``compare.py``; TensorBoard and MLflow: ``tracking.py``.
Atomic, durable writes are ``fedsilo.files`` (lower floors use them too).
"""
