"""A batch worker's health, from its own metrics endpoint: the compose healthcheck.

    python3 -m launcher.adapters.metrics_probe http://127.0.0.1:9464/metrics [--max-age SECONDS]

Healthy (exit 0) when the endpoint answers, the batch's main loop went round within ``--max-age``
seconds (``launcher_batch_heartbeat_timestamp_seconds``), the coordinator answered the scrape
(``launcher_coordinator_up``) and the batch is not paused for want of lease renewals
(``launcher_batch_paused``). Otherwise exit 1 and one line saying which, which
``docker inspect`` shows as the health log. Standard library and prometheus_client's parser only:
it starts in a fraction of a second, as a healthcheck every few seconds must.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

DEFAULT_MAX_AGE_S = 30.0


def probe(url: str, max_age: float, *, timeout: float = 5.0, now: float | None = None) -> str | None:
    """None when healthy, else why not."""
    if not url.startswith(("http://", "https://")):
        return f"{url}: not an http(s) URL"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http(s) checked above)
            text = response.read().decode()
    except OSError as exc:
        return f"metrics endpoint {url} does not answer: {exc}"
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if not sample.labels:
                values[sample.name] = sample.value
    beat = values.get("launcher_batch_heartbeat_timestamp_seconds")
    if beat is None:
        return f"{url} is not a launcher batch's metrics (no launcher_batch_heartbeat_timestamp_seconds)"
    age = (time.time() if now is None else now) - beat
    if age > max_age:
        return f"the batch's main loop last went round {age:.0f}s ago (more than {max_age:g}s): stuck"
    if values.get("launcher_coordinator_up") == 0:
        return "the coordinator did not answer the batch's metrics scrape"
    if values.get("launcher_batch_paused") == 1:
        return "the batch is paused: it cannot renew its leases with the coordinator"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m launcher.adapters.metrics_probe", description=__doc__)
    parser.add_argument("url", help="the batch's metrics URL (batch --metrics-port)")
    parser.add_argument("--max-age", type=float, default=DEFAULT_MAX_AGE_S, help="seconds (default: %(default)s)")
    args = parser.parse_args(argv)
    problem = probe(args.url, args.max_age)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
