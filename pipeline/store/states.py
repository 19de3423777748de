"""The two state machines of sending, and the one table of moves each may make.

A send::

    scheduled ──fire──▶ sending ──finish──▶ sent ──reopen──▶ paused
        │  ▲               │ ▲ ──fail────▶ failed ─┐           │
      miss │reschedule   pause│resume ◀────────────┘ ◀─────────┘
        ▼  │               ▼ │
      missed, held       paused          (hold: sending ─▶ held, when the draft fails at fire time;
                                          refire: sending ─▶ scheduled, when its runner died before queueing)
    any but sent ──cancel──▶ cancelled (final)

A delivery row only moves forward, except where an operator asks for it::

    queued ──claim──▶ sending ──settle──▶ sent | failed | uncertain | queued (nothing accepted)
      │ cancel, suppress                  failed ──retry──▶ queued, uncertain ──resend──▶ queued
                                          uncertain ──observe──▶ sent (the provider reported on it)

Every status change in the store goes through ``SEND_MOVES`` or
``DELIVERY_MOVES`` (listmonk's single switch of campaign statuses is the model):
an update names the move, and only rows in one of its sources change. An
operator's illegal move is a ``SendError`` that says why, and what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SendStatus(StrEnum):
    SCHEDULED = "scheduled"
    SENDING = "sending"
    PAUSED = "paused"
    SENT = "sent"
    FAILED = "failed"
    HELD = "held"
    MISSED = "missed"
    CANCELLED = "cancelled"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNCERTAIN = "uncertain"
    SUPPRESSED = "suppressed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class SubscriberStatus(StrEnum):
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"
    ERASED = "erased"  # their personal data deleted at their request; only a hash of the address is kept


# Why an address is in suppressions (its reason column); the first three also become the subscriber's status.
SUPPRESSION_REASONS = ("unsubscribed", "bounced", "complained", "manual", "provider")


@dataclass(frozen=True)
class Move:
    """A named change of status: from any of ``sources`` to ``target``."""

    sources: frozenset[str]
    target: str


def _move(sources: set[SendStatus] | set[DeliveryStatus] | set[SubscriberStatus],
          target: SendStatus | DeliveryStatus | SubscriberStatus) -> Move:
    return Move(frozenset(sources), target)


S, D = SendStatus, DeliveryStatus

SEND_MOVES: dict[str, Move] = {
    "fire": _move({S.SCHEDULED}, S.SENDING),  # its time came and a runner claimed it
    "resume": _move({S.SENDING, S.PAUSED, S.FAILED}, S.SENDING),  # SENDING: only once its lease expired
    "pause": _move({S.SENDING}, S.PAUSED),  # by an operator, or after failed batches in a row
    "finish": _move({S.SENDING}, S.SENT),  # nothing queued or in flight, and someone was sent it
    "fail": _move({S.SENDING}, S.FAILED),  # refused credentials, or every row failed
    "hold": _move({S.SENDING}, S.HELD),  # the draft failed to build or check when it fired
    "miss": _move({S.SCHEDULED}, S.MISSED),  # later than max_lateness when a runner came back
    "reschedule": _move({S.SCHEDULED, S.HELD, S.MISSED}, S.SCHEDULED),
    "refire": _move({S.SENDING}, S.SCHEDULED),  # fired, but its runner died before it queued the audience
    "reopen": _move({S.SENT}, S.PAUSED),  # rows were queued again; resuming sends them
    "cancel": _move({S.SCHEDULED, S.SENDING, S.PAUSED, S.FAILED, S.HELD, S.MISSED}, S.CANCELLED),
}

DELIVERY_MOVES: dict[str, Move] = {
    "claim": _move({D.QUEUED}, D.SENDING),
    "settle_sent": _move({D.SENDING}, D.SENT),
    "settle_failed": _move({D.SENDING}, D.FAILED),
    "settle_uncertain": _move({D.SENDING}, D.UNCERTAIN),  # no answer, or in flight when its sender died
    "settle_queued": _move({D.SENDING}, D.QUEUED),  # the provider accepted nothing (refused credentials)
    "cancel": _move({D.QUEUED}, D.CANCELLED),
    "suppress": _move({D.QUEUED}, D.SUPPRESSED),  # unsubscribed, bounced or complained during the send
    "retry": _move({D.FAILED}, D.QUEUED),  # transient failures, by an operator
    "resend": _move({D.UNCERTAIN}, D.QUEUED),  # by an operator who accepts a possible duplicate
    # A provider's webhook reported on it (delivered, bounced ...): the provider certainly accepted it.
    "observe": _move({D.UNCERTAIN}, D.SENT),
}


B = SubscriberStatus
# A subscriber leaves by their own hand or the provider's word, and comes back only by confirming a signup
# (double opt-in) or by an operator's import with ``--resubscribe``. Erasure is final for that row: a later
# signup of the same address is a new subscriber.
SUBSCRIBER_MOVES: dict[str, Move] = {
    "unsubscribe": _move({B.ACTIVE}, B.UNSUBSCRIBED),
    "bounce": _move({B.ACTIVE, B.UNSUBSCRIBED}, B.BOUNCED),  # a hard bounce, or too many soft ones
    "complain": _move({B.ACTIVE, B.UNSUBSCRIBED, B.BOUNCED}, B.COMPLAINED),
    "confirm": _move({B.ACTIVE, B.UNSUBSCRIBED, B.BOUNCED, B.COMPLAINED}, B.ACTIVE),  # a confirmed signup
    "erase": _move({B.ACTIVE, B.UNSUBSCRIBED, B.BOUNCED, B.COMPLAINED}, B.ERASED),
}


def _table(moves: dict[str, Move], statuses: type[StrEnum]) -> dict[str, frozenset[str]]:
    return {status: frozenset(move.target for move in moves.values() if status in move.sources)
            for status in statuses}


SEND_TRANSITIONS = _table(SEND_MOVES, SendStatus)
DELIVERY_TRANSITIONS = _table(DELIVERY_MOVES, DeliveryStatus)
SUBSCRIBER_TRANSITIONS = _table(SUBSCRIBER_MOVES, SubscriberStatus)

# Statuses a row is created in when a send queues its audience.
DELIVERY_INITIAL = frozenset({D.QUEUED, D.SUPPRESSED, D.SKIPPED})
# A send that may still send someone something.
ACTIVE_SENDS = frozenset({S.SCHEDULED, S.SENDING, S.PAUSED})
# Rows that hold (or may hold) the edition for their subscriber: a later send of it skips them.
RECEIVED = frozenset({D.SENT, D.SENDING, D.UNCERTAIN, D.QUEUED})
# Rows still to be settled by a sender.
UNSETTLED = frozenset({D.QUEUED, D.SENDING})


def send_moves_from(status: str) -> tuple[str, ...]:
    """The moves a send in ``status`` may make, for an operator's menu."""
    return tuple(name for name, move in SEND_MOVES.items() if status in move.sources)
