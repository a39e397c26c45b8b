"""Event-level evaluation of a detector replayed as the daily job: the same episode definition for all.

A detector's flags (series x days) are read as **episodes**: maximal runs of consecutive flagged days of
one series. Per labelled event (``shared.costs.synthetic.AnomalyEvent``):

* window - the days the event explains: a spike ``[onset, onset + duration]`` (its last day + 1, where
  an episode ends), a level shift ``[onset, onset + 3]``, a drift ``[onset, onset + ramp + 3]``;
* caught - flagged within the catch window: spike and shift ``[onset, onset + 2]``; drift from onset
  to 3 days after its ramp ends (a slow ramp is not visible on its first days);
* a false episode - an episode that overlaps no event window (the days after an event, a recovery or
  a new level that alerts again a few days later, count as false).

recall = caught events / events (onset in the evaluated days, catch window inside the data and inside the
series's life); precision =
caught / (caught + false episodes); F1; material recall over events whose first-day excess is >= $25;
false episodes per 1,000 evaluated series-days (days the series exists). Events too small to act on
(developed excess under $10/day: the engine's gate, and every baseline's) are left out of recall and
precision, and flags in their windows are neither caught nor false; so are flags on a series carrying an
increase its generator injected but left unlabelled (``traits["unlabelled_increase"]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.costs.synthetic import AnomalyEvent, SyntheticCosts

BoolArray = npt.NDArray[np.bool_]
KINDS = ("spike", "level_shift", "drift")
ACTIONABLE_USD = 10.0
MATERIAL_USD = 25.0


@dataclass(frozen=True)
class Quality:
    method: str
    family: str
    events: int
    caught: int
    false_episodes: int
    series_days: int
    precision: float
    recall: float
    f1: float
    recall_material: float
    recall_by_kind: dict[str, tuple[int, int]]
    seconds: float

    @property
    def false_per_1000(self) -> float:
        return 1000.0 * self.false_episodes / max(self.series_days, 1)

    def kind_recall(self, kind: str) -> float:
        hit, total = self.recall_by_kind.get(kind, (0, 0))
        return hit / total if total else float("nan")


def windows(event: AnomalyEvent) -> tuple[int, int, int]:
    """(first day, last day explained, last day that still counts as caught)."""
    if event.kind == "spike":
        return event.onset, event.onset + event.duration_days, event.onset + 2
    if event.kind == "level_shift":
        return event.onset, event.onset + 3, event.onset + 2
    end = event.onset + event.duration_days
    return event.onset, end + 3, end + 3


def episodes(flags: BoolArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(series, first day, last day) of each run of consecutive flagged days."""
    padded = np.zeros((flags.shape[0], flags.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = flags
    edges = np.diff(padded, axis=1)
    rows_s, starts = np.nonzero(edges == 1)
    rows_e, ends = np.nonzero(edges == -1)
    order_s, order_e = np.lexsort((starts, rows_s)), np.lexsort((ends, rows_e))
    return rows_s[order_s], starts[order_s], ends[order_e] - 1


def evaluate(
    method: str, family: str, flags: BoolArray, data: SyntheticCosts, eval_days: int, seconds: float
) -> Quality:
    n, n_days = data.costs.shape
    first_eval = n_days - eval_days
    flags = flags.copy()
    flags[:, :first_eval] = False
    explained = np.zeros_like(flags)
    ignored = np.zeros_like(flags)
    for event in data.events:
        start, end, _ = windows(event)
        target = explained if event.developed_excess_usd >= ACTIONABLE_USD else ignored
        target[event.series, start : end + 1] = True
    # a series whose generator injected an increase it left unlabelled: its flags are neither caught nor false
    unlabelled = data.traits.get("unlabelled_increase")
    if unlabelled is not None:
        ignored[unlabelled] = True
    series, starts, ends = episodes(flags)
    cum_explained = np.concatenate([np.zeros((n, 1), dtype=np.int64), np.cumsum(explained | ignored, axis=1)], axis=1)
    overlap = cum_explained[series, ends + 1] - cum_explained[series, starts]
    false_episodes = int(np.sum(overlap == 0))
    series_days = int(np.sum(~np.isnan(data.costs[:, first_eval:])))

    # an event is judged when its catch window lies inside the evaluated days and inside the series's life (a
    # drift on a resource deleted half-way up its ramp cannot be caught by anyone)
    judged = [
        e
        for e in data.events
        if e.onset >= first_eval and windows(e)[2] < n_days and not np.isnan(data.costs[e.series, windows(e)[2]])
    ]
    actionable = [e for e in judged if e.developed_excess_usd >= ACTIONABLE_USD]
    caught = {id(e): bool(flags[e.series, e.onset : windows(e)[2] + 1].any()) for e in actionable}
    material = [e for e in actionable if e.first_day_excess_usd >= MATERIAL_USD]
    tp = sum(caught.values())
    precision = tp / max(tp + false_episodes, 1)
    recall = tp / max(len(actionable), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    by_kind = {
        kind: (sum(caught[id(e)] for e in actionable if e.kind == kind), sum(e.kind == kind for e in actionable))
        for kind in KINDS
    }
    material_recall = sum(caught[id(e)] for e in material) / max(len(material), 1)
    return Quality(
        method, family, len(actionable), tp, false_episodes, series_days, precision, recall, f1,
        material_recall, by_kind, seconds,
    )  # fmt: skip


def table(rows: list[Quality]) -> str:
    header = (
        f"{'family':<10}{'method':<30}{'events':>7}{'caught':>7}{'false':>6}{'prec':>7}{'recall':>7}{'F1':>7}"
        f"{'rec.mat':>8}{'spike':>7}{'shift':>7}{'drift':>7}{'false/1k':>9}{'sec':>7}"
    )
    lines = [header, "-" * len(header)]
    for q in rows:
        lines.append(
            f"{q.family:<10}{q.method:<30}{q.events:>7}{q.caught:>7}{q.false_episodes:>6}{q.precision:>7.3f}"
            f"{q.recall:>7.3f}{q.f1:>7.3f}{q.recall_material:>8.3f}{q.kind_recall('spike'):>7.2f}"
            f"{q.kind_recall('level_shift'):>7.2f}{q.kind_recall('drift'):>7.2f}{q.false_per_1000:>9.2f}"
            f"{q.seconds:>7.1f}"
        )
    return "\n".join(lines)
