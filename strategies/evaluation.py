"""Federation-wide evaluation metrics from the institutions' replies."""

from __future__ import annotations

from flwr.app import MetricRecord, RecordDict

from fedsilo.metrics import confusion_from_flat, scores_from_confusion


def aggregate_evaluate_metrics(records: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Federation-wide metrics over the union of the institutions' test splits.

    Accuracy and macro-F1 come from the summed confusion matrices (exact, not an average
    of per-institution scores); the loss is the example-weighted mean.
    """
    total = None
    loss_sum, n = 0.0, 0
    for rec in records:
        m = next(iter(rec.metric_records.values()))
        flat = list(m["confusion"])
        size = int(round(len(flat) ** 0.5))
        conf = confusion_from_flat(flat, size)
        total = conf if total is None else total + conf
        loss_sum += float(m["loss"]) * int(m[weighted_by_key])
        n += int(m[weighted_by_key])
    acc, f1 = scores_from_confusion(total)
    return MetricRecord({"accuracy": acc, "macro-f1": f1, "loss": loss_sum / max(n, 1),
                         "num-examples": n})
