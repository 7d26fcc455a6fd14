"""The `fluxbox` commands and their exit codes: 0 success, 2 bad usage or config, 1 else."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from appliance.config import Config, ConfigError, load_config, resolve_config
from appliance.control import CALL_TIMEOUT_S, ControlError, call

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2

View = dict[str, Any]  # an answer of the control socket, as JSON
Answer = TypeVar("Answer", View, list[View])


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse exits 2 too; keep its message short
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    # Only a parent (its options are copied, it never parses): a _Parser like the
    # subcommands' parsers it is a parent of.
    common = _Parser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                        help="config file (default: $FLUXBOX_CONFIG, "
                             "/etc/fluxbox/fluxbox.toml, then the embedded default)")
    parser = _Parser(prog="fluxbox", parents=[common],
                     description="Flux Box: store-and-forward DICOM for mobile imaging.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, help_text: str) -> _Parser:
        return sub.add_parser(name, parents=[common], help=help_text)

    add("run", "run the appliance in the foreground")
    add("status", "site, link, queue, disk, health, last errors").add_argument(
        "--json", action="store_true")
    add("studies", "every study on the box and its delivery state").add_argument(
        "--json", action="store_true")
    site = add("site", "show the current site; pin one; go back to detection")
    site.add_argument("action", nargs="?", choices=["auto", "set"])
    site.add_argument("id", nargs="?")
    add("retry", "retry now, clearing back-off").add_argument("study_uid", nargs="?")
    assign = add("assign", "give a held study its site (service staff)")
    assign.add_argument("study_uid")
    assign.add_argument("site_id")
    add("worklist", "the cached worklist of the current site (patient data; root only)"
        ).add_argument("--json", action="store_true")
    add("console", "the front-panel status console")
    add("led", "drive the status LED from the appliance's health (root; fluxbox-led.service)")
    add("check-config", "validate a config file").add_argument("file")
    add("firewall", "nft commands opening the box's ports where the config listens "
        "(fluxbox-firewall.service)")
    demo = add("demo", "a self-contained run: modality, box, PACS and a flaky link")
    demo.add_argument("--instances", type=int, default=24)
    demo.add_argument("--cuts", type=int, default=3)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(f"fluxbox: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except ConfigError as exc:
        print(f"fluxbox: bad config:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"fluxbox: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ControlError as exc:
        print(f"fluxbox: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_ERROR
    except BrokenPipeError:  # `fluxbox studies | head`: the reader left; say nothing more
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


def _config(args: argparse.Namespace) -> Config:
    return resolve_config(getattr(args, "config", None))


def _call(args: argparse.Namespace, command: str, **kwargs: object) -> object:
    """`kwargs` are the command's arguments (the timeout is not one of them)."""
    return call(_config(args).box.data_dir, command, timeout_s=CALL_TIMEOUT_S, **kwargs)


def _view(answer: object) -> View:
    """An answer that is one JSON object (status, site, retry, assign)."""
    if not isinstance(answer, dict):
        raise ControlError("the appliance gave an unexpected answer")
    return answer


def _rows(answer: object) -> list[View]:
    """An answer that is a list of JSON objects (studies, worklist)."""
    if not isinstance(answer, list):
        raise ControlError("the appliance gave an unexpected answer")
    return answer


def _print(result: Answer, as_json: bool, render: Callable[[Answer], str]) -> None:
    print(json.dumps(result, indent=2) if as_json else render(result))


def cmd_run(args: argparse.Namespace) -> int:
    from appliance.app import Box
    from appliance.logs import configure

    config = _config(args)
    configure()
    try:
        Box(config).run_forever()
    except OSError as exc:
        print(f"fluxbox: cannot start: {exc.strerror or exc} "
              f"(port {config.box.port}, data {config.box.data_dir})", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from appliance.report import render_status

    _print(_view(_call(args, "status")), args.json, render_status)
    return EXIT_OK


def cmd_studies(args: argparse.Namespace) -> int:
    from appliance.report import render_studies

    _print(_rows(_call(args, "studies")), args.json, render_studies)
    return EXIT_OK


def cmd_site(args: argparse.Namespace) -> int:
    if args.action == "set" and not args.id:
        raise UsageError("site set needs a site ID")
    if args.action != "set" and args.id:
        raise UsageError("usage: fluxbox site [auto | set ID]")
    result = _view(_call(args, "site", action=args.action or "show", id=args.id))
    print(f"site: {result['id'] or 'unknown'} ({result['source'] or 'no evidence'})")
    return EXIT_OK


def cmd_retry(args: argparse.Namespace) -> int:
    result = _view(_call(args, "retry", study_uid=args.study_uid))
    print(f"retrying now; {result['requeued']} failed instances queued again")
    return EXIT_OK


def cmd_assign(args: argparse.Namespace) -> int:
    result = _view(_call(args, "assign", study_uid=args.study_uid, site_id=args.site_id))
    print(f"study assigned to site {result['site']}; it is delivered there")
    return EXIT_OK


def cmd_worklist(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("fluxbox: the worklist holds patient data; run as root", file=sys.stderr)
        return EXIT_ERROR
    entries = _rows(_call(args, "worklist"))
    _print(entries, args.json, lambda rows: "\n".join(json.dumps(r) for r in rows)
           or "worklist empty")
    return EXIT_OK


def cmd_console(args: argparse.Namespace) -> int:
    """Full screen, refreshing every 2 s; single keys act (see appliance/console.py)."""
    from appliance.console import Keys, render
    from hw.console import Terminal

    config = _config(args)

    def box(command: str, **kwargs: object) -> object:
        return call(config.box.data_dir, command, timeout_s=5, **kwargs)

    keys = Keys(box, [site.id for site in config.sites])
    terminal = Terminal()
    with terminal.raw():
        while True:
            try:
                status, studies = _view(box("status")), _rows(box("studies"))
                screen = render(status, studies, time.time(), keys.prompt)
            except ControlError as exc:
                studies, screen = [], ["FLUX BOX", "", "the appliance does not answer:", str(exc)]
            terminal.draw(screen)
            key = terminal.read_key(2.0)
            if key is None:
                continue
            try:
                if not keys.press(key, studies):
                    return EXIT_OK
            except ControlError as exc:
                keys.prompt = f"failed: {exc}"


def cmd_led(args: argparse.Namespace) -> int:
    """Until SIGTERM: the LED named by box.status_led shows the running appliance's health."""
    import signal
    import threading

    from appliance.led_follower import LedFollower
    from hw.led import SysfsLed

    config = _config(args)
    if not config.box.status_led:
        print("fluxbox: no status LED configured (box.status_led); nothing to drive")
        return EXIT_OK
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    def health() -> str:
        state: str = _view(call(config.box.data_dir, "status", timeout_s=5))["health"]
        return state

    print(f"fluxbox: the status LED {config.box.status_led} follows the appliance's health",
          flush=True)
    LedFollower(health, SysfsLed(config.box.status_led)).run(stop)
    return EXIT_OK


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    sites = ", ".join(s.id for s in config.sites)
    print(f"{args.file}: ok ({len(config.sites)} sites: {sites})")
    return EXIT_OK


def cmd_firewall(args: argparse.Namespace) -> int:
    from appliance.firewall import ruleset

    sys.stdout.write(ruleset(_config(args)))
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from appliance.demo.run import run_demo

    return run_demo(instances=args.instances, cuts=args.cuts)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run, "status": cmd_status, "studies": cmd_studies, "site": cmd_site,
    "retry": cmd_retry, "assign": cmd_assign, "worklist": cmd_worklist, "console": cmd_console,
    "led": cmd_led,
    "check-config": cmd_check_config, "firewall": cmd_firewall, "demo": cmd_demo,
}
