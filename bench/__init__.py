"""Benchmarks at a million calls: a bulk data loader and timed scenarios, each measured
through the real stack and against a raw floor (hand-written SQL through psycopg plus
`json.dumps` of the same payload). Run with `make bench`; see bench/README.md."""
