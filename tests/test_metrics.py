"""How workers record job metrics in Redis and how a scrape reports them (fakeredis: no server needed)."""

import pytest


def test_stage_histograms_are_cumulative_when_scraped(fake_redis):
    """Workers store one bucket per timing; the scrape must add them up the way Prometheus counts."""
    from resizer.metrics import JobCollector, record_job

    for seconds in (0.003, 0.02, 0.02, 100.0):
        record_job(fake_redis, "success", "", {"decode_resize": seconds})
    record_job(fake_redis, "failure", "corrupt_image", {})
    families = {f.name: f for f in JobCollector(fake_redis, "resize").collect()}
    samples = {(s.name, s.labels.get("le"), s.labels.get("outcome")): s.value
               for f in families.values() for s in f.samples}
    bucket = "resizer_job_stage_seconds_bucket"
    assert samples[(bucket, "0.005", None)] == 1
    assert samples[(bucket, "0.01", None)] == 1
    assert samples[(bucket, "0.025", None)] == 3
    assert samples[(bucket, "60.0", None)] == 3
    assert samples[(bucket, "+Inf", None)] == 4
    assert samples[("resizer_job_stage_seconds_sum", None, None)] == pytest.approx(100.043)
    assert samples[("resizer_jobs_total", None, "failure")] == 1
