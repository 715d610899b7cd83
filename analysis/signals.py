"""What the analysis announces to other apps (as `calls.signals` does for calls).

Receivers run inside the transaction that stored the result.
"""

from django.dispatch import Signal

# A call's analysis reached a final status (completed, failed, skipped). Arguments
# (keywords): call_id, at.
call_analyzed = Signal()
