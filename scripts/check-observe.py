#!/usr/bin/env python3
"""Checks a running coordinator's HTTP endpoint (observe.http) from outside, as an operator's tools would.

  check-observe.py metrics PAGE_URL --workers N   scrape /metrics, parse it with prometheus_client's parser,
                                                  check every series csptrain promises; /api/status and
                                                  /api/metrics?since=
  check-observe.py browser PAGE_URL --workers N --screenshot FILE
                                                  open the live page in headless Chromium (selenium with
                                                  Debian's chromium-driver), read the DOM twice >= 3 s apart
                                                  and save a screenshot

Prints one JSON object; exits 0 when every check passed, 1 when one failed, 77 when the browser is missing
(the caller decides whether that is a skip).
"""
import argparse
import json
import pathlib
import re
import shutil
import sys
import time
import urllib.request

COUNTERS_PER_REASON = {
    "csptrain_worker_removals_total": ("reason", ["left", "disconnected", "missed_deadline", "silent"]),
}
WORKER_REFUSAL_REASONS = ["duplicate", "stale", "not_assigned", "malformed", "overloaded", "other"]
GAUGES = ["csptrain_step", "csptrain_steps_planned", "csptrain_examples_per_second", "csptrain_loss",
          "csptrain_learning_rate", "csptrain_sparsity_ratio", "csptrain_sparsity_overall_ratio", "csptrain_workers"]
COUNTERS = ["csptrain_received_bytes_total", "csptrain_sent_bytes_total", "csptrain_worker_joins_total",
            "csptrain_reassigned_micro_batches_total"]
HISTOGRAMS = ["csptrain_step_duration_seconds", "csptrain_projection_duration_seconds",
              "csptrain_checkpoint_write_duration_seconds"]


def get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


def samples_by_name(text):
    from prometheus_client.parser import text_string_to_metric_families
    families = {}
    samples = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return families, samples


def check_metrics(page, workers, problems, report):
    status, ctype, body = get(page + "metrics")
    if status != 200 or not ctype.startswith("text/plain"):
        problems.append(f"/metrics answered {status} {ctype}")
    families, samples = samples_by_name(body.decode())
    report["families"] = len(families)

    def one(name):
        values = samples.get(name)
        if not values:
            problems.append(f"{name} missing")
            return None
        return values[0][1]

    for name in GAUGES:
        one(name)
    for name in COUNTERS:
        v = one(name)
        if v is not None and v < 0:
            problems.append(f"{name} is negative: {v}")
    for name in HISTOGRAMS:
        for suffix in ["_bucket", "_count", "_sum"]:
            if name + suffix not in samples:
                problems.append(f"histogram {name}{suffix} missing")
    if (one("csptrain_step") or 0) <= 0:
        problems.append("csptrain_step is not positive during a run")
    if (one("csptrain_received_bytes_total") or 0) <= 0 or (one("csptrain_sent_bytes_total") or 0) <= 0:
        problems.append("bytes in or out not counted")
    if (one("csptrain_worker_joins_total") or 0) < workers:
        problems.append(f"fewer than {workers} joins counted")
    if one("csptrain_workers") != workers:
        problems.append(f"csptrain_workers is {one('csptrain_workers')}, expected {workers}")
    for name, (label, reasons) in COUNTERS_PER_REASON.items():
        present = {labels.get(label) for labels, _ in samples.get(name, [])}
        for reason in reasons:
            if reason not in present:
                problems.append(f"{name}{{{label}=\"{reason}\"}} missing (every reason must exist from the start)")
    wer = {labels.get("set") for labels, _ in samples.get("csptrain_validation_wer_ratio", [])}
    if wer != {"valid", "valid_channel", "valid_seen"}:
        problems.append(f"csptrain_validation_wer_ratio has sets {sorted(wer)}")
    layers = [labels.get("layer") for labels, _ in samples.get("csptrain_layer_sparsity_ratio", [])]
    if not layers:
        problems.append("csptrain_layer_sparsity_ratio has no layer")
    report["layers"] = layers

    names = sorted({labels.get("worker") for labels, _ in samples.get("csptrain_worker_micro_batches_total", [])})
    report["workers"] = names
    if len(names) != workers:
        problems.append(f"csptrain_worker_micro_batches_total has workers {names}, expected {workers}")
    for worker in names:
        done = [v for labels, v in samples["csptrain_worker_micro_batches_total"] if labels.get("worker") == worker]
        if not done or done[0] <= 0:
            problems.append(f"worker {worker} has done no micro-batch")
        refused = {labels.get("reason") for labels, _ in samples.get("csptrain_worker_chunks_refused_total", [])
                   if labels.get("worker") == worker}
        for reason in WORKER_REFUSAL_REASONS:
            if reason not in refused:
                problems.append(f"csptrain_worker_chunks_refused_total{{worker=\"{worker}\",reason=\"{reason}\"}} missing")
        heard = [v for labels, v in samples.get("csptrain_worker_last_heard_seconds", []) if labels.get("worker") == worker]
        if not heard or not 0 <= heard[0] < 30:
            problems.append(f"worker {worker}: last heard {heard}")
        counts = [v for labels, v in samples.get("csptrain_worker_micro_batch_duration_seconds_count", [])
                  if labels.get("worker") == worker]
        if not counts or counts[0] <= 0:
            problems.append(f"worker {worker}: no micro-batch duration observed")
    for name in [n for n in families if not n.startswith("csptrain_")]:
        problems.append(f"a series outside csptrain_: {name}")

    # Every series the Grafana dashboard queries is in the scrape.
    dashboard = pathlib.Path(__file__).resolve().parent.parent / "Deploy/grafana/csptrain-dashboard.json"
    if dashboard.exists():
        used = set()
        for p in json.loads(dashboard.read_text())["panels"]:
            for t in p["targets"]:
                used.update(re.findall(r"csptrain_[a-z_]+", t["expr"]))
        report["dashboard_series"] = len(used)
        for name in sorted(used):
            if name not in samples:
                problems.append(f"the Grafana dashboard queries {name}, which /metrics does not have")

    status, ctype, body = get(page + "api/status")
    doc = json.loads(body)
    if doc["run"]["step"] <= 0 or len(doc["workers"]) != workers or not doc["points"]:
        problems.append(f"/api/status: step {doc['run']['step']}, {len(doc['workers'])} workers, {len(doc['points'])} points")
    since = doc["points"][-1]["step"] - 1 if doc["points"] else 0
    _, _, body = get(page + f"api/metrics?since={since}")
    later = json.loads(body)["points"]
    if not later or min(p["step"] for p in later) <= since:
        problems.append(f"/api/metrics?since={since} returned steps {[p['step'] for p in later][:5]}")
    report["status_step"] = doc["run"]["step"]


def check_browser(page, workers, screenshot, problems, report):
    driver_path = shutil.which("chromedriver")
    browser_path = shutil.which("chromium")
    if not driver_path or not browser_path:
        report["skipped"] = "chromium or chromedriver not installed (Debian: chromium chromium-driver)"
        return 77
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    try:
        driver.set_page_load_timeout(20)
        driver.get(page)

        def read():
            return driver.execute_script("""
                return {
                  step: parseInt(document.getElementById('step').textContent, 10),
                  workers: Array.from(document.querySelectorAll('#workers tbody tr')).map(r => r.cells[0].textContent),
                  curve: (document.querySelector('#loss-chart path.curve') || {getAttribute: () => ''}).getAttribute('d') || '',
                  bars: document.querySelectorAll('#sparsity-chart rect.bar').length,
                  error: document.getElementById('error').textContent,
                };""")

        deadline = time.time() + 20
        first = read()
        while (first["step"] <= 0 or not first["curve"]) and time.time() < deadline:
            time.sleep(0.5)
            first = read()
        time.sleep(3.5)
        second = read()
        report["first"] = {k: first[k] for k in ["step", "workers", "bars"]}
        report["second"] = {k: second[k] for k in ["step", "workers", "bars"]}
        report["curve_length"] = len(second["curve"])
        if not second["step"] > first["step"]:
            problems.append(f"the step did not grow in 3.5 s: {first['step']} then {second['step']}")
        if len([w for w in second["workers"] if w.startswith("worker-")]) != workers:
            problems.append(f"workers listed: {second['workers']}")
        if not second["curve"].startswith("M") or "L" not in second["curve"]:
            problems.append(f"the loss curve's path is empty: {second['curve'][:40]!r}")
        if second["bars"] <= 0:
            problems.append("no sparsity bar")
        if second["error"]:
            problems.append(f"the page shows an error: {second['error']}")
        if screenshot:
            driver.save_screenshot(screenshot)
            report["screenshot"] = screenshot
    finally:
        driver.quit()
    return 0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["metrics", "browser"])
    parser.add_argument("page")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--screenshot")
    args = parser.parse_args()
    page = args.page if args.page.endswith("/") else args.page + "/"
    problems, report = [], {"mode": args.mode}
    code = 0
    try:
        if args.mode == "metrics":
            check_metrics(page, args.workers, problems, report)
        else:
            code = check_browser(page, args.workers, args.screenshot, problems, report)
    except Exception as error:  # report it as a failed check, with what failed
        problems.append(f"{type(error).__name__}: {error}")
    report["problems"] = problems
    report["ok"] = not problems and code == 0
    print(json.dumps(report))
    sys.exit(code if code else (1 if problems else 0))


if __name__ == "__main__":
    main()
