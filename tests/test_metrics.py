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


def test_a_stages_count_is_its_buckets_total_and_no_count_is_stored(fake_redis):
    """The scrape's +Inf and ``stage_count`` are the total of the buckets, whatever a hash's "count" says (an
    older release's workers wrote one); this release writes a bucket and the sum a stage, no count."""
    from resizer.metrics import STAGE_KEY, JobCollector, record_job, stage_count

    fake_redis.hset(STAGE_KEY + "upload", mapping={"0.005": 2, "count": 2, "sum": 0.004})  # an older worker's
    pipe = fake_redis.pipeline(transaction=False)
    record_job(pipe, "success", "", {"upload": 0.003, "decode_resize": 0.5})
    assert len(pipe.command_stack) == 5  # the outcome, then a bucket and the sum per stage
    pipe.execute()
    assert fake_redis.hget(STAGE_KEY + "decode_resize", "count") is None
    assert int(fake_redis.hget(STAGE_KEY + "upload", "count")) == 2  # an older worker's, left as it was
    fake_redis.hset(STAGE_KEY + "upload", "count", 99)  # a count nothing reads any more does not matter
    record_job(fake_redis, "success", "", {"upload": 120.0})
    assert stage_count(fake_redis, "upload") == 4 and stage_count(fake_redis, "decode_resize") == 1
    assert stage_count(fake_redis, "encode") == 0
    samples = {(s.name, s.labels.get("stage"), s.labels.get("le")): s.value
               for f in JobCollector(fake_redis, "resize").collect() for s in f.samples}
    assert samples[("resizer_job_stage_seconds_bucket", "upload", "+Inf")] == 4
    assert samples[("resizer_job_stage_seconds_count", "upload", None)] == 4
    assert samples[("resizer_job_stage_seconds_bucket", "upload", "60.0")] == 3
    assert samples[("resizer_job_stage_seconds_bucket", "decode_resize", "+Inf")] == 1
    assert samples[("resizer_job_stage_seconds_sum", "upload", None)] == pytest.approx(120.007)
