"""``talos bench``: produce, consume and end-to-end load tests (Kafka's perf-test tools).

The pieces are small on purpose: :mod:`stats` and :mod:`pacing` are plain
functions, :mod:`pool` runs load generators in worker processes, :mod:`talos_load`
holds the Talos generators, :mod:`runner` puts a run together and :mod:`cli`
parses the command line. ``bench/`` at the top of the repository reuses the
same pool and statistics to drive NATS JetStream and Redis Streams.
"""
