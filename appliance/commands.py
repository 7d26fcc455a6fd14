"""The control commands (`fluxbox site`, `assign`, `retry`, ...): what each does to the
box, in the words of a CommandError when it cannot."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from appliance.config import Config
from appliance.control import CommandError
from appliance.inflight import StudyBusy
from appliance.logs import event
from appliance.sites import SiteDecision
from appliance.store import Store, StudyRecord
from appliance.studies import AssignRefused

log = logging.getLogger("fluxbox.commands")

PIN_SETTING = "site_pin"

Args = dict[str, Any]  # a command's arguments, as the control socket got them
Handler = Callable[[Args], object]


@dataclass(frozen=True)
class Actions:
    """What the commands may ask of the running box."""

    assign: Callable[[StudyRecord, str, str, float], None]  # study, site, source, now
    retry_now: Callable[[], None]  # clear back-off and wake the workers
    site_changed: Callable[[], None]  # wake delivery and the worklist
    current_site: Callable[[], SiteDecision]


class Commands:
    """The control socket's commands over the store and the box's actions."""

    def __init__(self, store: Store, config: Config, actions: Actions,
                 views: dict[str, Handler]) -> None:
        self.store = store
        self.config = config
        self.actions = actions
        self.views = views  # read-only commands: status, studies, worklist

    def table(self) -> dict[str, Handler]:
        return {**self.views, "site": self.site, "retry": self.retry, "assign": self.assign}

    def site(self, args: Args) -> dict[str, Any]:
        action = args.get("action", "show")
        if action == "set":
            site_id = args.get("id", "")
            self._known_site(site_id)
            self.store.set_setting(PIN_SETTING, site_id)
            event(log, "site pinned", site=site_id)
        elif action == "auto":
            self.store.set_setting(PIN_SETTING, None)
            event(log, "site released to detection")
        self.actions.site_changed()
        return self.actions.current_site().as_json()

    def assign(self, args: Args) -> dict[str, Any]:
        study = self._study(args.get("study_uid") or "")
        site_id = args.get("site_id") or ""
        self._known_site(site_id)
        try:
            self.actions.assign(study, site_id, "manual", time.time())
        except (StudyBusy, AssignRefused) as exc:
            raise CommandError(str(exc)) from exc
        return {"study_uid": study.study_uid, "site": site_id}

    def retry(self, args: Args) -> dict[str, Any]:
        study_uid = args.get("study_uid")
        study_key = self._study(study_uid).key if study_uid else None
        moved = self.store.retry_failed(study_key, time.time())
        self.actions.retry_now()
        return {"requeued": moved}

    def _study(self, study_uid: str) -> StudyRecord:
        study = self.store.study_by_uid(study_uid)
        if study is None:
            raise CommandError("no such study on this box")
        return study

    def _known_site(self, site_id: str) -> None:
        if self.config.site(site_id) is None:
            known = ", ".join(s.id for s in self.config.sites) or "none"
            raise CommandError(f"unknown site {site_id!r}; configured sites: {known}")
