"""What the call domain announces to other apps.

Receivers run inside the transaction that made the change, after it: what they write
commits or rolls back with it, and a receiver that raises rolls the change back. The
webhooks app records its outbox this way, so calls never import webhooks.
"""

from django.dispatch import Signal

# A call moved from one status to another. Arguments (keywords): call_id,
# from_status, to_status, end_reason (None unless it ended), at (when).
call_status_changed = Signal()

# The agent reported its usage so far (cumulative, per provider and model), newer than
# any report of its session before it in the batch. Arguments (keywords): call_id,
# session (the agent's run of the call; "" when it named none), usage, at. Sent once per
# session of the batch, with the call's row locked.
call_usage_reported = Signal()

# The agent's new transcript lines, metric samples and handoffs were stored (a replayed
# event is not new). Arguments (keywords): call_id, lines and samples ([(row id,
# timestamp)] in the batch's order), handoffs ([{from_agent, to_agent, timestamp}], in
# time order). Sent with the call's row locked, before its aggregates move.
call_events_recorded = Signal()
