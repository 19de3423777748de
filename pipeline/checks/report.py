"""The records of a pre-flight check: problems found and links tried."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]
CheckName = Literal["links", "disclaimers", "content", "images", "size", "compat"]
LinkOutcome = Literal["ok", "broken", "redirected", "unreachable", "skipped"]


@dataclass(frozen=True, kw_only=True)
class Problem:
    """One thing wrong with an edition, and where: draft.md:LINE, a section, a file or the URL."""

    check: CheckName
    severity: Severity
    message: str
    location: str


@dataclass(frozen=True, kw_only=True)
class LinkResult:
    """What happened when a link was tried (or why it was not)."""

    url: str
    status: int | None
    final_url: str | None
    result: LinkOutcome
    message: str = ""


@dataclass(frozen=True, kw_only=True)
class Report:
    """Everything the checks found for one edition."""

    edition: str
    problems: tuple[Problem, ...]
    links: tuple[LinkResult, ...]

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(problem for problem in self.problems if problem.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(problem for problem in self.problems if problem.severity == "warning")

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON contract of ``newsletter check --format json``."""
        return {
            "ok": self.ok,
            "edition": self.edition,
            "problems": [asdict(problem) for problem in self.problems],
            "links": [
                {"url": link.url, "status": link.status, "final_url": link.final_url, "result": link.result}
                for link in self.links
            ],
        }
