"""The soak (`make soak`): the whole fleet on this machine under a bounded load with
faults injected, then invariants checked against the generator's own record
(soak/__main__.py; docs/reliability.md has the figures)."""
