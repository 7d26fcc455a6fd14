"""The front-panel console: what `fluxbox console` shows and what its keys do (no I/O).

Large text for the health state, then site, link, queue, last delivery and what
needs attention; no patient data (studies are named by the tail of their UID).
Keys: r retry, p pin a site, a back to detection, s assign a held study, q quit.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from appliance.report import human_size

# A 5-row block font for the words the console shows large.
_FONT = {
    "A": [" ### ", "#   #", "#####", "#   #", "#   #"],
    "B": ["#### ", "#   #", "#### ", "#   #", "#### "],
    "D": ["#### ", "#   #", "#   #", "#   #", "#### "],
    "E": ["#####", "#    ", "#### ", "#    ", "#####"],
    "F": ["#####", "#    ", "#### ", "#    ", "#    "],
    "G": [" ####", "#    ", "#  ##", "#   #", " ####"],
    "H": ["#   #", "#   #", "#####", "#   #", "#   #"],
    "I": ["#####", "  #  ", "  #  ", "  #  ", "#####"],
    "K": ["#   #", "#  # ", "###  ", "#  # ", "#   #"],
    "L": ["#    ", "#    ", "#    ", "#    ", "#####"],
    "N": ["#   #", "##  #", "# # #", "#  ##", "#   #"],
    "O": [" ### ", "#   #", "#   #", "#   #", " ### "],
    "S": [" ####", "#    ", " ### ", "    #", "#### "],
    "T": ["#####", "  #  ", "  #  ", "  #  ", "  #  "],
    "U": ["#   #", "#   #", "#   #", "#   #", " ### "],
    "?": [" ### ", "#   #", "  ## ", "     ", "  #  "],
}


def big(word: str) -> list[str]:
    rows = ["", "", "", "", ""]
    for char in word.upper():
        glyph = _FONT.get(char, _FONT["?"])
        rows = [row + g.replace("#", "\u2588") + " " for row, g in zip(rows, glyph, strict=True)]
    return rows


def _ago(when: float | None, now: float) -> str:
    if not when:
        return "never"
    seconds = int(now - when)
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"


def held_studies(studies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in studies if s["state"] in ("held", "failed") or s.get("overdue")]


def render(status: dict[str, Any], studies: list[dict[str, Any]], now: float,
           prompt: str = "") -> list[str]:
    site, link, queue = status["site"], status["link"], status["queue"]
    modem = link.get("modem") or {}
    radio = (f"  {modem.get('technology') or ''} {modem.get('signal_percent') or '?'}%"
             if modem else "")
    last = max((d["last_success_at"] or 0 for d in status.get("destinations", [])),
               default=0)
    lines = [f"FLUX BOX{time.strftime('%H:%M:%S', time.localtime(now)):>40}", ""]
    lines += big(status["health"]) + [""]
    lines += [
        f"SITE    {site['id'] or 'unknown'} ({site['source'] or 'no evidence'})",
        f"LINK    {link['class']}{' ' + link['ssid'] if link.get('ssid') else ''}{radio}",
        f"QUEUE   {queue['studies']} studies  {queue['instances']} instances  "
        f"{human_size(queue['bytes'])}",
        f"LAST    delivery {_ago(last, now)}",
    ]
    waiting = held_studies(studies)
    if waiting or status["errors"]:
        lines += ["", "NEEDS ATTENTION"]
        lines += [f"  {e}" for e in status["errors"][:3]]
        for n, study in enumerate(waiting[:9], 1):
            why = study["held_reason"] or study["state"]
            lines.append(f"  {n}. ...{study['study_uid'][-12:]}  {study['instances']} images"
                         f"  {why}")
    lines += ["", prompt or "[r] retry  [p] pin site  [a] auto site  [s] assign held  [q] quit"]
    return lines


@dataclass
class Keys:
    """The key dialogue. `press(key)` returns False to quit; `call` talks to the box."""

    call: Callable[..., Any]  # control.call: decoded JSON
    sites: list[str]
    prompt: str = ""
    _mode: str = ""
    _study: str | None = None
    _choices: list[str] = field(default_factory=list)

    def press(self, key: str, studies: list[dict[str, Any]]) -> bool:
        if key in ("\x1b", "\x7f"):
            self._reset("cancelled")
        elif self._mode:
            self._choose(key)
        elif key == "q":
            return False
        elif key == "r":
            result = self.call("retry")
            self._reset(f"retrying now ({result['requeued']} failed instances queued again)")
        elif key == "a":
            self.call("site", action="auto")
            self._reset("site: back to detection")
        elif key == "p":
            self._ask("pin", self.sites, "pin which site?")
        elif key == "s":
            uids = [s["study_uid"] for s in held_studies(studies) if s["state"] == "held"]
            if uids:
                self._ask("study", uids, "assign which held study? (number)")
            else:
                self._reset("no held study")
        return True

    def _ask(self, mode: str, choices: list[str], question: str) -> None:
        self._mode, self._choices = mode, choices[:9]
        labels = choices[:9] if mode != "study" else [f"...{c[-12:]}" for c in choices[:9]]
        self.prompt = question + "  " + "  ".join(
            f"[{n}] {label}" for n, label in enumerate(labels, 1)) + "  [esc] cancel"

    def _choose(self, key: str) -> None:
        if not key.isdigit() or not 1 <= int(key) <= len(self._choices):
            return
        choice = self._choices[int(key) - 1]
        if self._mode == "pin":
            self.call("site", action="set", id=choice)
            self._reset(f"site pinned: {choice}")
        elif self._mode == "study":
            self._study = choice
            self._ask("assign", self.sites, "to which site?")
        elif self._mode == "assign":
            self.call("assign", study_uid=self._study, site_id=choice)
            self._reset(f"study assigned to {choice}")

    def _reset(self, message: str) -> None:
        self._mode, self._choices, self._study = "", [], None
        self.prompt = message
