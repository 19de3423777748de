"""``make chaos``, reduced: send workers SIGKILLed at random and PostgreSQL restarted mid-send, against the
emulator with faults on; everyone exactly once, or listed uncertain; with Resend, exactly once and nothing
uncertain; the delivery log equal to the emulator's record row for row (``tests/chaos.py`` checks it)."""

from __future__ import annotations

import pytest

from tests import chaos


@pytest.mark.parametrize("provider", ["sendgrid", "resend"])
def test_killed_workers_and_a_database_restart_lose_and_double_nobody(provider: str) -> None:
    # 30 requests of 100, in 6 jobs of 500: enough for the faults, the kills and the restart to land mid-send.
    result = chaos.run(audience=3000, workers=3, provider=provider, kill_every=2.0, seed=11, restart_database=True,
                       limit_seconds=240, batch_size=100, part_size=500, log=lambda line: None)
    print("\n".join(result.lines()))
    assert result.finished, result.lines()
    assert result.kills >= 1 and result.database_restarts == 1  # the faults really happened
    assert result.twice == 0 and result.mismatches == []
    assert set(result.counts) <= {"sent", "uncertain"} and sum(result.counts.values()) == 3000
    if provider == "resend":  # an idempotency key makes a retried batch safe: nothing is left in doubt
        assert result.counts == {"sent": 3000}
    assert result.ok
