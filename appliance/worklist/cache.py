"""The worklist cache: sync from each site's worklist server, clean-up, answering queries.

Sync: while a site with a ``[site.worklist]`` is the current one, one broad C-FIND
pulls every order scheduled from yesterday to today + ``days_ahead`` (optionally for
one modality and station), every ``sync_interval_s``; after a failed sync again
within ``retry_interval_s``; at once on `poke()` (the site changed, the link came
back). Only a complete answer (every pending response, then final success) replaces
the site's cache, in one store transaction; a failed or partial one keeps the last
good list and records why. Orders gone from the server are gone after the next good
sync.

Entries are kept as encoded datasets in UTF-8, corrected by the site's rules
(worklist.corrections); the notes of what was corrected ride in the entry as one private
element that is never answered.

Answers: the Modality Worklist C-FIND SCP answers from the cache of the current site
only (no site known: no matches), by worklist.matching, in the character set of
worklist.charset.answer_terms. Patient values are never logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.events import Event
from pynetdicom.sop_class import (  # type: ignore[attr-defined]  # made at import
    ModalityWorklistInformationFind,
)

from appliance import dimse, statuses
from appliance.config import Config, SiteConfig
from appliance.logs import event
from appliance.store import Store
from appliance.worklist import matching
from appliance.worklist.charset import answer_terms, render, to_utf8
from appliance.worklist.corrections import correct
from appliance.worklist.entries import decode_entry, encode_entry, entry_json, prune
from appliance.worklist.sync import OK, Fetcher, fetch, sync_query

log = logging.getLogger("fluxbox.worklist")

TICK_S = 1.0


class Worklist:
    """The sync worker and the C-FIND SCP of the worklist, over the store's cache."""

    def __init__(self, store: Store, config: Config, site: Callable[[], str | None], *,
                 calling_ae: str, fetcher: Fetcher | None = None) -> None:
        self.store = store
        self.config = config
        self.site = site
        transmit = config.transmit
        self.fetcher = fetcher or (lambda cfg, query: fetch(
            cfg, query, calling_ae=calling_ae, connect_timeout_s=transmit.connect_timeout_s,
            dimse_timeout_s=transmit.dimse_timeout_s))
        self._wake = threading.Event()
        self._poked = False
        self._attempts: dict[str, tuple[float, bool]] = {}  # site -> (at, good)
        self._seen: tuple[str | None, bool] | None = None
        self._lock = threading.Lock()
        self._counted: dict[str, tuple[float | None, int]] = {}  # site -> (synced_at, notes)

    # -- sync ---------------------------------------------------------------------

    def poke(self) -> None:
        """Sync the current site on the worker's next turn, whatever the interval says;
        safe from any thread."""
        self._poked = True
        self._wake.set()

    def observe(self, site_id: str | None, link_up: bool) -> None:
        """Each snapshot: a new site, or the link to it coming back, syncs at once."""
        seen, self._seen = self._seen, (site_id, link_up)
        if site_id and link_up and seen != (site_id, link_up):
            self.poke()

    def run(self, stop: threading.Event) -> None:
        """The sync loop, until `stop` is set (poke() after setting it to end the wait)."""
        while not stop.is_set():
            self._wake.clear()
            try:
                self.tick(time.time())
            except Exception as exc:  # the type only: a message may quote a patient value
                event(log, "worklist error", logging.ERROR, error=type(exc).__name__)
            self._wake.wait(TICK_S)

    def tick(self, now: float) -> str | None:
        """Sync the current site if it is due; the result, or None if nothing ran."""
        poked, self._poked = self._poked, False
        site = self._site_config(self.site())
        if site is None or site.worklist is None:
            return None
        last = self._attempts.get(site.id)
        if not poked and last is not None:
            at, good = last
            wait_s = site.worklist.sync_interval_s if good else min(
                site.worklist.retry_interval_s, site.worklist.sync_interval_s)
            if now - at < wait_s:
                return None
        return self.sync_once(site, now)

    def sync_once(self, site: SiteConfig, now: float) -> str:
        """Pull the site's worklist and replace its cache if the answer is complete;
        otherwise keep the cache and record why. Returns the result."""
        cfg = site.worklist
        assert cfg is not None
        fetched = self.fetcher(cfg, sync_query(cfg, date.fromtimestamp(now)))
        if not fetched.complete:
            self._note(site.id, now, fetched.result)
            self.store.note_worklist_sync(site.id, now, fetched.result)
            return fetched.result
        entries, corrections, unreadable = [], 0, fetched.unreadable
        for identifier in fetched.identifiers:
            try:
                entry = to_utf8(identifier, cfg.server_character_set)
                prune(entry)
                notes = correct(entry, cfg.corrections)
                entries.append(encode_entry(entry, notes))
            except Exception:  # one broken order must not freeze the whole list
                unreadable += 1
                continue
            corrections += len(notes)
        result = OK if not unreadable else f"{OK}: {unreadable} unreadable entries left out"
        self.store.replace_worklist(site.id, entries, now, result)
        self._note(site.id, now, result, entries=len(entries), corrections=corrections)
        return result

    def _note(self, site_id: str, now: float, result: str, **fields: object) -> None:
        good = result.startswith(OK)
        before = self._attempts.get(site_id)
        self._attempts[site_id] = (now, good)
        if good:  # every few minutes while all is well: a line only when news
            level = logging.INFO if before is None or not before[1] else logging.DEBUG
            event(log, "worklist synced", level, site=site_id, result=result, **fields)
        elif before is None or before[1]:  # once per outage, not every retry
            event(log, "worklist sync failed", logging.WARNING, site=site_id, result=result)

    def _site_config(self, site_id: str | None) -> SiteConfig | None:
        return self.config.site(site_id) if site_id else None

    # -- answering ----------------------------------------------------------------

    def answer(self, query: Dataset) -> list[Dataset]:
        """The responses to a modality's query, from the current site's cache; none
        when no site is known."""
        site = self._site_config(self.site())
        if site is None:
            return []
        cfg = site.worklist
        terms = answer_terms(cfg.answer_character_set if cfg else "", query)
        rule = cfg.unrepresentable if cfg else "transliterate"
        ignore_case = cfg is None or cfg.name_matching == "case-insensitive"
        charset = terms[0] if len(terms) == 1 else list(terms)
        responses = []
        for raw in self.store.worklist(site.id):
            entry, _ = decode_entry(raw)
            response = matching.answer(query, render(entry, terms, rule),
                                           names_ignore_case=ignore_case)
            if response is not None:
                response.SpecificCharacterSet = charset
                responses.append(response)
        return responses

    def on_c_find(self, ev: Event) -> Iterator[dimse.Answer]:
        """pynetdicom's EVT_C_FIND handler: pending answers, then success (sent by
        pynetdicom), or cancel when the modality asks."""
        if dimse.find_request(ev).AffectedSOPClassUID != ModalityWorklistInformationFind:
            yield statuses.SOP_CLASS_NOT_SUPPORTED, None
            return
        try:
            query = ev.identifier
            responses = self.answer(query)
        except Exception as exc:
            event(log, "worklist query failed", logging.WARNING, error=type(exc).__name__)
            yield statuses.CANNOT_UNDERSTAND, None
            return
        for response in responses:
            if ev.is_cancelled:
                yield statuses.CANCEL, None
                return
            yield statuses.PENDING, response

    # -- views ---------------------------------------------------------------------

    def entries_view(self) -> list[dict[str, Any]]:
        """`fluxbox worklist --json`: the current site's entries (patient data)."""
        site_id = self.site()
        if not site_id:
            return []
        return [entry_json(*decode_entry(raw)) for raw in self.store.worklist(site_id)]

    def status(self, now: float) -> dict[str, Any]:
        """The current site's cache for `status`: no patient data."""
        site_id = self.site()
        state = self.store.worklist_state(site_id) if site_id else {}
        synced_at = state.get("synced_at")
        return {
            "site": site_id,
            "entries": state.get("entries", 0),
            "synced_at": synced_at,
            "age_s": round(now - synced_at, 1) if synced_at is not None else None,
            "result": state.get("result"),
            "attempted_at": state.get("attempted_at", synced_at),
            "corrections": self._corrections(site_id, synced_at) if site_id else 0,
        }

    def _corrections(self, site_id: str, synced_at: float | None) -> int:
        with self._lock:
            counted = self._counted.get(site_id)
            if counted is None or counted[0] != synced_at:
                total = sum(len(decode_entry(raw)[1]) for raw in self.store.worklist(site_id))
                counted = self._counted[site_id] = (synced_at, total)
            return counted[1]
