"""What the call domain announces to other apps.

Receivers run inside the transaction that made the change, after it: what they write
commits or rolls back with it, and a receiver that raises rolls the change back. The
webhooks app records its outbox this way, so calls never import webhooks.
"""

from django.dispatch import Signal

# A call moved from one status to another. Arguments (keywords): call_id,
# from_status, to_status, end_reason (None unless it ended), at (when).
call_status_changed = Signal()
