"""Scoring of a quiz round, the elimination count and the final standings (pure functions)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from ._state import Entry, Player, RoundScore, Standing

__all__ = [
    "FOOLED_BY_ROBOT",
    "PER_VOTE_RECEIVED",
    "POINTS_CORRECT_VOTE",
    "SPOTTED_ROBOT",
    "eliminated_entry",
    "rank",
    "score_round",
]

#: final vote for the true answer
POINTS_CORRECT_VOTE = 100
#: elimination vote against the decoy ("robot") answer
SPOTTED_ROBOT = 50
#: to each author of an answer, for each final vote it received
PER_VOTE_RECEIVED = 50
#: final vote for the decoy answer (a penalty)
FOOLED_BY_ROBOT = -50


def eliminated_entry(votes: Iterable[tuple[str, str]]) -> str | None:
    """The entry id with strictly the most elimination votes; None on a tie or no votes."""
    counts = Counter(entry_id for _, entry_id in votes).most_common()
    if not counts:
        return None
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return None
    return counts[0][0]


def score_round(
    pool: Sequence[Entry],
    eliminate_votes: Iterable[tuple[str, str]],
    final_votes: Iterable[tuple[str, str]],
    players: Iterable[str],
) -> tuple[RoundScore, ...]:
    """Each of ``players``' points for the round, in the order given.

    Votes are ``(voter, entry id)``. Votes by anyone not in ``players`` (a
    player who left) and points for authors not in ``players`` are dropped.
    """
    seated = list(players)
    kinds = {entry.id: entry for entry in pool}
    points = {pid: dict.fromkeys(("correct", "robot", "received", "fooled"), 0) for pid in seated}
    for voter, entry_id in eliminate_votes:
        entry = kinds.get(entry_id)
        if voter in points and entry is not None and entry.kind == "decoy":
            points[voter]["robot"] += SPOTTED_ROBOT
    for voter, entry_id in final_votes:
        entry = kinds.get(entry_id)
        if voter not in points or entry is None:
            continue
        if entry.kind == "correct":
            points[voter]["correct"] += POINTS_CORRECT_VOTE
        elif entry.kind == "decoy":
            points[voter]["fooled"] += FOOLED_BY_ROBOT
        for author in entry.authors:
            if author in points and author != voter:
                points[author]["received"] += PER_VOTE_RECEIVED
    return tuple(
        RoundScore(
            player_id=pid,
            correct_vote=p["correct"],
            spotted_robot=p["robot"],
            votes_received=p["received"],
            fooled=p["fooled"],
        )
        for pid, p in points.items()
    )


def rank(players: Sequence[Player]) -> tuple[Standing, ...]:
    """Final standings, best first.

    Order: score (high first), then correct final votes over the game (more
    first), then seat (who joined earlier first). Seats are unique, so the
    order is total and deterministic.
    """
    ordered = sorted(players, key=lambda p: (-p.score, -p.correct_votes, p.seat))
    return tuple(Standing(p.id, p.name, p.score, p.correct_votes) for p in ordered)
