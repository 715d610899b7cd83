"""What the analysis announces to other apps (as `calls.signals` does for calls).

Receivers run inside the transaction that stored the result.
"""

from django.dispatch import Signal

# A call's analysis reached a final status (completed, failed, skipped). Arguments
# (keywords): call_id, at.
call_analyzed = Signal()

# One attempt of a call's analysis ended, and its requests' answers reported tokens: what
# they used, summed per provider and model as the agent's `usage` items are (component
# `llm`). Sent once per attempt, before `call_analyzed`, in the transaction that ends the
# attempt, with the call's row locked (whether or not the run is still the current one: the
# provider bills the requests either way). Arguments (keywords): call_id, usage.
call_analysis_usage_reported = Signal()
