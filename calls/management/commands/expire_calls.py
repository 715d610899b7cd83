from __future__ import annotations

from calls.expiry import calls_expire
from voicecalls.periodic import PeriodicCommand


class Command(PeriodicCommand):
    help = (
        "Time out calls nobody joined or that ran too long; fail calls no agent joined; "
        "reconcile silent calls."
    )

    def run_once(self) -> None:
        result = calls_expire()
        if (
            result.connect_timeouts
            or result.dial_timeouts
            or result.max_durations
            or result.reconciled
            or result.agents_not_joined
            or result.livekit_errors
            or result.open_counters_repaired
            or result.recordings_reconciled
        ):
            self.stdout.write(
                f"connect_timeout={result.connect_timeouts} dial_timeout={result.dial_timeouts} "
                f"max_duration={result.max_durations} "
                f"reconciled={result.reconciled} agent_not_joined={result.agents_not_joined} "
                f"livekit_errors={result.livekit_errors} "
                f"open_counters_repaired={result.open_counters_repaired} "
                f"recordings_reconciled={result.recordings_reconciled}"
            )
