#!/usr/bin/env python3
"""Writes Deploy/grafana/csptrain-dashboard.json: a Grafana dashboard over the coordinator's /metrics.

    scripts/grafana-dashboard.py > Deploy/grafana/csptrain-dashboard.json

scripts/check-observe.py checks that every series it uses is in a real scrape."""
import json
panels = []
def panel(title, exprs, unit="short", kind="timeseries", w=8, h=8, desc=""):
    i = len(panels)
    targets = [{"datasource": {"type": "prometheus", "uid": "${datasource}"}, "expr": e, "legendFormat": l, "refId": chr(65 + k)}
               for k, (e, l) in enumerate(exprs)]
    x = sum(p["gridPos"]["w"] for p in panels if p["gridPos"]["y"] == panels[-1]["gridPos"]["y"]) if panels else 0
    y = panels[-1]["gridPos"]["y"] if panels else 0
    if x + w > 24:
        x, y = 0, y + h
    panels.append({"id": i + 1, "type": kind, "title": title, "description": desc,
                   "datasource": {"type": "prometheus", "uid": "${datasource}"},
                   "gridPos": {"x": x, "y": y, "w": w, "h": h}, "targets": targets,
                   "fieldConfig": {"defaults": {"unit": unit}, "overrides": []}, "options": {}})
S = '{job=~"$job"}'
J = 'job=~"$job"'
panel("Step", [(f"csptrain_step{S}", "step"), (f"csptrain_steps_planned{S}", "planned")], kind="stat", w=6, h=5)
panel("Workers", [(f"csptrain_workers{S}", "workers")], kind="stat", w=6, h=5)
panel("Examples per second", [(f"csptrain_examples_per_second{S}", "examples/s"), (f"csptrain_audio_seconds_per_second{S}", "audio s/s")], w=6, h=5)
panel("ETA", [(f"(csptrain_steps_planned{S} - csptrain_step{S}) / rate(csptrain_step{S}[5m])", "seconds left")], unit="s", kind="stat", w=6, h=5)
panel("Training loss", [(f"csptrain_loss{S}", "loss")])
panel("Validation WER", [(f"csptrain_validation_wer_ratio{S}", "{{set}}")], unit="percentunit")
panel("Learning rate", [(f"csptrain_learning_rate{S}", "lr")])
panel("Step time (p50, p95)", [
    (f"histogram_quantile(0.5, sum by (le) (rate(csptrain_step_duration_seconds_bucket{S}[5m])))", "p50"),
    (f"histogram_quantile(0.95, sum by (le) (rate(csptrain_step_duration_seconds_bucket{S}[5m])))", "p95")], unit="s")
panel("Micro-batch time per worker (p50)", [
    (f"histogram_quantile(0.5, sum by (le, worker) (rate(csptrain_worker_micro_batch_duration_seconds_bucket{S}[5m])))", "{{worker}}")], unit="s")
panel("Micro-batches per second per worker", [(f"rate(csptrain_worker_micro_batches_total{S}[1m])", "{{worker}}")])
panel("Sparsity", [(f"csptrain_sparsity_ratio{S}", "pruned layers"), (f"csptrain_sparsity_overall_ratio{S}", "all parameters")], unit="percentunit")
panel("Sparsity per layer", [(f"csptrain_layer_sparsity_ratio{S}", "{{layer}}")], unit="percentunit", kind="bargauge")
panel("Projection time (p95)", [(f"histogram_quantile(0.95, sum by (le) (rate(csptrain_projection_duration_seconds_bucket{S}[5m])))", "p95")], unit="s")
panel("Chunks refused per worker and reason", [(f"sum by (worker, reason) (rate(csptrain_worker_chunks_refused_total{S}[5m])) > 0", "{{worker}} {{reason}}")])
panel("Seconds since last heard", [(f"csptrain_worker_last_heard_seconds{S}", "{{worker}}")], unit="s")
panel("Network", [(f"rate(csptrain_received_bytes_total{S}[1m])", "in"), (f"rate(csptrain_sent_bytes_total{S}[1m])", "out")], unit="Bps")
panel("Joins and removals", [(f"increase(csptrain_worker_joins_total{S}[5m])", "joins"),
                             (f"sum by (reason) (increase(csptrain_worker_removals_total{S}[5m]))", "removed: {{reason}}"),
                             (f"increase(csptrain_reassigned_micro_batches_total{S}[5m])", "reassigned micro-batches")])
panel("Checkpoint write time (p95)", [(f"histogram_quantile(0.95, sum by (le) (rate(csptrain_checkpoint_write_duration_seconds_bucket{S}[30m])))", "p95")], unit="s")
dash = {
    "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource", "pluginId": "prometheus", "pluginName": "Prometheus"}],
    "title": "csptrain run", "uid": "csptrain-run", "tags": ["csptrain"], "timezone": "utc", "schemaVersion": 39, "version": 1,
    "refresh": "10s", "time": {"from": "now-3h", "to": "now"},
    "description": "One csptrain coordinator's /metrics (observe.http): progress, loss, WER, sparsity, workers, network. Series: Sources/Observe/RunMetrics.swift.",
    "templating": {"list": [
        {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"},
        {"name": "job", "type": "query", "label": "job", "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": "label_values(csptrain_step, job)", "includeAll": True, "multi": True, "refresh": 2}]},
    "panels": panels,
}
print(json.dumps(dash, indent=2))
