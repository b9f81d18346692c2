"""The page cache: `reader.ObjectCache` is what the gateway calls; `jobs.LoadJobs` runs loads.

Settings come in as `settings.CacheSettings` (with `policy.Rule` rows); numbers go out as
`stats.CacheStats` / `stats.ReadStats`. Nothing here knows HTTP, S3 XML or Prometheus.
"""
