"""Completeness findings of a study, from what the store keeps per instance: gaps and
duplicates in instance numbers, acquisitions, frames, and the instances' own remarks."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class InstanceFacts:
    """What the store keeps per instance, for completeness findings."""

    series_uid: str
    series_number: int | None
    instance_number: int | None
    images_in_acquisition: int | None
    number_of_frames: int | None
    remarks: tuple[str, ...] = ()  # InstanceHeader.remarks


_LISTED = 5  # how many instance numbers a finding lists before "..."


def _listing(numbers: Sequence[str]) -> str:
    shown = ", ".join(numbers[:_LISTED])
    return f"{shown}, ..." if len(numbers) > _LISTED else shown


def _series_labels(series: dict[str, list[InstanceFacts]]) -> list[tuple[str, str]]:
    """(series UID, label) in a fixed order; labels never show a UID."""

    def number(uid: str) -> int | None:
        numbers = [f.series_number for f in series[uid] if f.series_number is not None]
        return min(numbers) if numbers else None

    order = sorted(series, key=lambda uid: (number(uid) is None, number(uid) or 0, uid))
    shared = Counter(number(uid) for uid in order if number(uid) is not None)
    seen: Counter[int] = Counter()
    labels = []
    for position, uid in enumerate(order, start=1):
        n = number(uid)
        if n is None:
            labels.append((uid, f"series #{position} (unnumbered)"))
        elif shared[n] > 1:
            seen[n] += 1
            labels.append((uid, f"series {n} ({seen[n]} of {shared[n]})"))
        else:
            labels.append((uid, f"series {n}"))
    return labels


def _gap_finding(label: str, numbers: set[int]) -> str | None:
    if not numbers:
        return None
    low, high = min(numbers), max(numbers)
    missing_count = high - low + 1 - len(numbers)
    if missing_count == 0:
        return None
    missing: list[str] = []
    for n in range(low, high + 1):
        if n not in numbers:
            missing.append(str(n))
            if len(missing) > _LISTED:
                break
    return f"{label}: instance numbers {low}-{high}, {missing_count} missing ({_listing(missing)})"


def _duplicate_finding(label: str, counts: Counter[int]) -> str | None:
    duplicated = sorted(n for n, c in counts.items() if c > 1)
    if not duplicated:
        return None
    items = [f"{n} x{counts[n]}" for n in duplicated]
    return f"{label}: duplicate instance numbers ({_listing(items)})"


def _acquisition_finding(label: str, facts: list[InstanceFacts]) -> str | None:
    declared = sorted(
        {f.images_in_acquisition for f in facts if f.images_in_acquisition is not None}
    )
    wrong = [d for d in declared if d != len(facts)]
    if not wrong:
        return None
    said = "/".join(str(d) for d in wrong)
    return f"{label}: ImagesInAcquisition says {said}, {len(facts)} instances received"


def _frame_findings(label: str, facts: list[InstanceFacts]) -> list[str]:
    findings = []
    zero = sum(1 for f in facts if f.number_of_frames == 0)
    if zero:
        findings.append(f"{label}: {zero} instance(s) with NumberOfFrames 0")
    return findings


def _remark_findings(instances: Iterable[InstanceFacts]) -> list[str]:
    """Each instance remark once, with how many instances have it, most frequent first."""
    counts = Counter(remark for facts in instances for remark in facts.remarks)
    return [f"{n} instance(s): {remark}"
            for remark, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def study_findings(instances: Iterable[InstanceFacts]) -> list[str]:
    """Completeness remarks about one study, then the remarks its instances were accepted
    with, in a fixed order; no patient data, no instance, series or study UIDs."""
    instances = list(instances)
    series: dict[str, list[InstanceFacts]] = defaultdict(list)
    for facts in instances:
        series[facts.series_uid].append(facts)
    findings: list[str] = []
    for uid, label in _series_labels(series):
        members = series[uid]
        counts = Counter(f.instance_number for f in members if f.instance_number is not None)
        candidates = [
            _gap_finding(label, set(counts)),
            _duplicate_finding(label, counts),
            _acquisition_finding(label, members),
        ]
        findings.extend(f for f in candidates if f is not None)
        findings.extend(_frame_findings(label, members))
    return findings + _remark_findings(instances)
