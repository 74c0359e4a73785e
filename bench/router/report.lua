-- report.lua - makes wrk print its result as one line bench.py can parse.
--
-- wrk calls done() once, after the run, with the summary counters and the
-- latency histogram (microseconds). The line starts with CZBENCH and holds
-- key=value pairs; percentiles come from wrk's own HdrHistogram-style record
-- of every request, the same numbers `wrk --latency` prints.
done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "CZBENCH requests=%d duration_us=%d bytes=%d err_connect=%d err_read=%d " ..
      "err_write=%d err_status=%d err_timeout=%d lat_mean_us=%.1f lat_p50_us=%d " ..
      "lat_p90_us=%d lat_p99_us=%d lat_p999_us=%d lat_max_us=%d\n",
      summary.requests, summary.duration, summary.bytes, e.connect, e.read,
      e.write, e.status, e.timeout, latency.mean, latency:percentile(50),
      latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.max))
end
