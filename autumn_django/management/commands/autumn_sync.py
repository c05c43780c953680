"""``manage.py autumn_sync``: bring every customer source's Autumn customers
(users, teams) up to date.

Day one it mirrors the existing users and teams; from cron it catches what signals
cannot see (``bulk_create``, ``QuerySet.update()``, raw SQL) and retries the
outbox. It reuses the sync engine's rules (:mod:`autumn_django.sync`) through
:mod:`autumn_django.bulk` (push, retry) and :mod:`autumn_django.reconcile`
(check, pull, prune); see docs/bulk-sync.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.db.models import CharField, Exists, OuterRef, Q, QuerySet
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.timesince import timeuntil

from ... import bulk, conf, mapping, reconcile, sources, tasks
from ...client import bulk_client
from ...exceptions import AutumnError
from ...models import Customer


class Progress:
    """A progress bar on a terminal; plain lines every few seconds elsewhere."""

    def __init__(self, stream: Any, total: int, *, interval: float = 5.0) -> None:
        self.stream, self.total, self.interval = stream, total, interval
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self.done = self.failed = 0
        self.started = self.last = time.monotonic()

    def advance(self, count: int, failed: int) -> None:
        self.done += count
        self.failed = failed
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + self.line(now))
            self.stream.flush()
        elif now - self.last >= self.interval or self.done >= self.total:
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()
            self.last = now

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        share = self.done / self.total if self.total else 1.0
        eta = (self.total - self.done) / rate if rate else 0.0
        bar = "#" * int(share * 30)
        return (
            f"[{bar:<30}] {self.done}/{self.total} {share:4.0%} {rate:7.1f}/s "
            f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta))} failed {self.failed}"
        )

    def finish(self) -> None:
        if self.tty and self.done:
            self.stream.write("\n")


class Command(BaseCommand):
    help = (
        "Bring Autumn's customers in line with the site's users and other customer sources "
        "(push, retry, check, pull, prune)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        modes = parser.add_mutually_exclusive_group()
        modes.add_argument(
            "--retry",
            action="store_true",
            help="only the outbox: rows pending, deleting, or failed with a retry due (for cron)",
        )
        modes.add_argument(
            "--check",
            action="store_true",
            help="report drift from one pass over customers.list; exit 1 if any (reads only)",
        )
        modes.add_argument(
            "--pull",
            action="store_true",
            help="refresh the mirror from customers.list and link existing customers to their objects",
        )
        modes.add_argument(
            "--prune", action="store_true", help="delete Autumn customers that no local object accounts for"
        )
        parser.add_argument(
            "--repair",
            action="store_true",
            help="with --check: get_or_create the missing customers and update those that differ",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="say what would be done; no write call, no row changed"
        )
        parser.add_argument(
            "--model",
            action="append",
            metavar="APP_LABEL.MODEL",
            help="only this customer source, e.g. teams.Team (repeatable; default: every registered source)",
        )
        parser.add_argument(
            "--ids", nargs="+", metavar="ID", help="only these objects (primary keys) of the one --model"
        )
        parser.add_argument("--users", nargs="+", metavar="ID", help="only these users (primary keys)")
        parser.add_argument(
            "--since",
            metavar="DATETIME",
            help="only objects changed since (joined, logged in, or mirror row changed); ISO 8601",
        )
        parser.add_argument("--limit", type=int, metavar="N", help="at most N objects of each source")
        parser.add_argument(
            "--enqueue",
            action="store_true",
            help="split the work into tasks for the Tasks API workers and return",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=bulk.MAX_CONCURRENCY,
            metavar="N",
            help=(
                f"the most requests at once (default {bulk.MAX_CONCURRENCY}); the run adapts below it, "
                "growing while Autumn answers fast and halving at a 429 or 5xx"
            ),
        )
        parser.add_argument(
            "--processes",
            type=_processes,
            default="auto",
            metavar="N",
            help=(
                "push in N processes, each taking its share of the objects and of the rate budget "
                "(default auto: one per CPU, at most 8, one per 2,000 objects; one on SQLite)"
            ),
        )
        parser.add_argument(
            "--shard",
            type=_shard,
            metavar="K/N",
            help="only the objects whose key hashes to K of N: one of N runs of one push (several machines)",
        )
        parser.add_argument("--part-of", type=int, default=1, help=argparse.SUPPRESS)
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            metavar="N",
            help="users read and rows written per query, and users per task with --enqueue (default 500)",
        )
        parser.add_argument("--json", action="store_true", help="print the summary as JSON")
        parser.add_argument("--no-input", action="store_true", help="do not ask for confirmation (--prune)")
        parser.add_argument(
            "--no-fail-on-error",
            dest="fail_on_error",
            action="store_false",
            help="exit 0 even when some users failed",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["concurrency"] < 1 or options["batch_size"] < 1:
            raise CommandError("--concurrency and --batch-size must be at least 1.")
        if options["enqueue"] and (
            options["dry_run"] or options["check"] or options["pull"] or options["prune"]
        ):
            raise CommandError("--enqueue goes with a push or --retry, without --dry-run.")
        if options["repair"] and not options["check"]:
            raise CommandError("--repair goes with --check: it repairs what the check finds.")
        pushing = not (
            options["retry"] or options["check"] or options["pull"] or options["prune"] or options["enqueue"]
        )
        if (options["shard"] or options["processes"] not in ("auto", 1)) and not pushing:
            raise CommandError(
                "--processes and --shard go with a push, not with --retry, --check, --pull, --prune "
                "or --enqueue."
            )
        if options["shard"] and options["limit"] is not None:
            raise CommandError("--shard goes without --limit: a limit cannot be shared between runs.")
        conf.load()  # a broken AUTUMN setting stops here, with its message
        self.options = options
        self.progress_stream = self.stderr if options["json"] else self.stdout
        try:
            if options["check"]:
                return self.drift_check()
            if options["pull"]:
                return self.pull()
            if options["prune"]:
                return self.prune()
            if options["enqueue"]:
                return self.enqueue()
            return self.push()
        except AutumnError as error:
            raise CommandError(f"Autumn refused or did not answer: {error}") from None

    # --- selection ------------------------------------------------------------

    def chosen(self) -> list[sources.CustomerSource]:
        """The sources this run covers: ``--model`` (or ``--users``), else all."""
        registry = sources.registry()
        labels = list(self.options["model"] or [])
        if self.options["users"]:
            if self.options["ids"] or labels:
                raise CommandError("--users goes alone; for other models use --model with --ids.")
            labels = [get_user_model()._meta.label_lower]
        try:
            chosen = [registry.get(label) for label in labels] if labels else list(registry)
        except LookupError as error:
            raise CommandError(str(error)) from None
        if self.options["ids"] and len(chosen) != 1:
            raise CommandError("--ids goes with exactly one --model.")
        return chosen

    def selections(self) -> list[QuerySet[Any]]:
        """A queryset per source chosen, with ``--ids``, ``--since`` and ``--limit``."""
        ids = self.options["users"] or self.options["ids"]
        since = self.parse_since(self.options["since"]) if self.options["since"] else None
        selections = []
        for source in self.chosen():
            objects = source.get_queryset().order_by("pk")
            if ids:
                objects = objects.filter(pk__in=ids)
            if since is not None:
                changed = Q(
                    Exists(
                        Customer.objects.filter(
                            content_type=ContentType.objects.get_for_model(source.model_class),
                            object_id=Cast(OuterRef("pk"), CharField()),
                            updated__gte=since,
                        )
                    )
                )
                field_names = {f.name for f in source.model_class._meta.get_fields()}
                for name in source.changed_fields:
                    if name in field_names:
                        changed |= Q(**{f"{name}__gte": since})
                objects = objects.filter(changed)
            if self.options["limit"] is not None:
                objects = objects[: self.options["limit"]]
            selections.append(objects)
        return selections

    @staticmethod
    def parse_since(value: str) -> Any:
        moment = parse_datetime(value)
        if moment is None:
            day = parse_date(value)
            if day is None:
                raise CommandError(f"--since {value!r} is not an ISO 8601 date or datetime.")
            moment = datetime.datetime(day.year, day.month, day.day)
        if timezone.is_naive(moment):
            moment = timezone.make_aware(moment)
        return moment

    @property
    def selected(self) -> bool:
        return bool(
            self.options["users"]
            or self.options["ids"]
            or self.options["model"]
            or self.options["since"]
            or self.options["limit"] is not None
        )

    # --- modes ------------------------------------------------------------------------

    def push(self) -> None:
        options = self.options
        retry = options["retry"]
        shard = options["shard"] or (1, 1)
        selections = [] if retry else self.selections()
        total = Customer.objects.outbox().count() if retry else sum(objects.count() for objects in selections)
        processes = self.process_count(total)
        if processes > 1:
            return self.push_in_processes(processes, total)
        # Rows left deleting (their objects gone) are one run's work: the first shard's.
        include_deleting = not self.selected and shard[0] == 1
        if not retry and include_deleting:
            total += Customer.objects.orphans().count()
        advance: Callable[[int, int], None]
        if options["part_of"] > 1:  # one of several processes: progress for the parent to add up
            advance = self.report_progress
            self.stop_with_parent()
        else:
            progress = Progress(self.progress_stream, math.ceil(total / shard[1]))
            advance = progress.advance
        runner = bulk.BulkSync(
            bulk_client(options["concurrency"], share=options["part_of"]),
            concurrency=options["concurrency"],
            batch_size=options["batch_size"],
            dry_run=options["dry_run"],
            report=self.report if options["verbosity"] >= 2 else None,
            advance=advance,
            shard=shard,
        )
        try:
            summary = runner.retry() if retry else runner.push(selections, include_deleting=include_deleting)
        except KeyboardInterrupt:
            summary = runner.finish()
            summary.interrupted = True
        if options["part_of"] <= 1:
            progress.finish()
        self.conclude(summary, "retry" if retry else "push")

    def conclude(self, summary: bulk.Summary, mode: str) -> None:
        """Print a push's summary and exit as it went."""
        options = self.options
        self.print_summary(summary, mode)
        if mode == "retry" and not options["json"] and not summary.interrupted:
            self.retry_hint()
        if summary.interrupted:
            raise CommandError(
                "Interrupted. Every row is in a true state; run autumn_sync again to finish "
                "(rows already synced are not repeated).",
                returncode=130,
            )
        if summary.failed and options["fail_on_error"]:
            raise CommandError(f"{summary.failed} failed; see above. Their rows hold the errors.")

    # --- one push, several processes ------------------------------------------------------------

    def process_count(self, total: int) -> int:
        """How many processes this push runs in (``--processes``): ``auto``
        starts more only for a whole push of many objects, run from the
        command line (``call_command`` keeps its caller's settings, which
        another process would not see), on a database that takes several
        writers at once (not SQLite)."""
        options, asked = self.options, self.options["processes"]
        alone = (
            options["retry"]
            or options["dry_run"]
            or options["shard"]
            or options["part_of"] > 1
            or options["users"]
            or options["ids"]
            or options["limit"] is not None
        )
        if asked == "auto":
            # SQLite takes one writer at a time: processes would wait on its lock.
            if alone or connection.vendor == "sqlite" or not self.from_command_line:
                return 1
            return bulk.processes_for(total) if _settings_module() else 1
        if asked > 1 and alone:
            raise CommandError(
                "--processes goes with a push of whole sources: not with --retry, --dry-run, --shard, "
                "--users, --ids or --limit."
            )
        if asked > 1 and not _settings_module():
            raise CommandError(
                "--processes needs DJANGO_SETTINGS_MODULE: its processes read the settings from it."
            )
        return int(asked)

    @property
    def from_command_line(self) -> bool:
        """Run from ``manage.py`` (Django's ``run_from_argv``), not ``call_command``."""
        return bool(getattr(self, "_called_from_command_line", False))

    def restart_command(self) -> list[str]:
        """How to start this command again: as it was started (``manage.py``,
        with whatever the site's script sets up first), else through
        ``python -m django``."""
        script = sys.argv[0] if sys.argv else ""
        # A package's __main__.py (python -m django) runs again as a module, never as a file.
        is_script = script.endswith(".py") and not script.endswith("__main__.py")
        if self.from_command_line and is_script and os.path.isfile(script):
            return [sys.executable, os.path.abspath(script), "autumn_sync"]
        return [sys.executable, "-m", "django", "autumn_sync"]

    def push_in_processes(self, count: int, total: int) -> None:
        """Run the push as ``count`` processes of this command, each with
        ``--shard K/N`` (and its share of the budget), following their
        progress and adding up their summaries. A process whose parent is
        gone (killed) stops as at Ctrl-C; SIGTERM stops them all at once."""
        options = self.options
        total += Customer.objects.orphans().count() if not self.selected else 0
        progress = Progress(self.progress_stream, total)
        command = [*self.restart_command(), "--json", "--no-fail-on-error", "--processes", "1"]
        command += ["--part-of", str(count), "--batch-size", str(options["batch_size"])]
        command += ["--concurrency", str(math.ceil(options["concurrency"] / count))]
        command += ["--verbosity", str(options["verbosity"])]
        for label in options["model"] or ():
            command += ["--model", label]
        if options["since"]:
            command += ["--since", options["since"]]
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": str(_settings_module()),
            # What this process imports from, so the settings module is found wherever it was run.
            "PYTHONPATH": os.pathsep.join(path or os.getcwd() for path in sys.path),
        }
        started = time.monotonic()
        children = [
            subprocess.Popen(
                [*command, "--shard", f"{number}/{count}"],
                stdin=subprocess.PIPE,  # closed when this process ends, however it ends
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for number in range(1, count + 1)
        ]
        lock, failed = threading.Lock(), [0] * count
        summaries: list[dict[str, Any] | None] = [None] * count
        last_lines: list[list[str]] = [[] for _ in children]

        def follow(index: int, stream: Any) -> None:
            for line in stream:  # read to the end whatever happens, or the process blocks on a full pipe
                with lock:
                    try:
                        if line.startswith(PROGRESS):
                            done, failed[index] = json.loads(line[len(PROGRESS) :])
                            progress.advance(done, sum(failed))
                        elif line.startswith(SUMMARY):
                            summaries[index] = json.loads(line[len(SUMMARY) :])
                        else:  # what the process said (-v 2, a warning, a traceback)
                            last_lines[index] = [*last_lines[index][-9:], line]
                            self.progress_stream.write(line.rstrip("\n"))
                    except (OSError, ValueError):  # this end's output closed (| head), a garbled line
                        pass

        readers = [
            threading.Thread(target=follow, args=(index, stream), daemon=True)
            for index, child in enumerate(children)
            for stream in (child.stdout, child.stderr)
        ]
        for reader in readers:
            reader.start()
        summary = bulk.Summary(started=started, processes=count)
        with _stopping_on_sigterm(children):
            try:
                for child in children:
                    child.wait()
            except KeyboardInterrupt:
                # Ctrl-C on a terminal reaches the processes too; a SIGINT sent
                # to this one alone is passed on to those still running.
                deadline = time.monotonic() + 5
                for child in children:
                    try:
                        child.wait(max(0.0, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        child.send_signal(signal.SIGINT)
                for child in children:
                    child.wait()
        for reader in readers:
            reader.join()
        progress.finish()
        lost = []
        for index, child in enumerate(children):
            part = summaries[index]
            if part is None:
                lost.append(
                    f"autumn_sync --shard {index + 1}/{count} ended with code {child.returncode} and "
                    "no summary; its last lines:\n" + "".join(last_lines[index])
                )
            else:
                summary.add(part)
        summary.duration = time.monotonic() - started
        if lost:
            self.print_summary(summary, "push")
            raise CommandError(
                "\n".join(lost) + "\nThe other processes' work is counted above; every row is in a "
                "true state: run autumn_sync again to finish."
            )
        self.conclude(summary, "push")

    def report_progress(self, done: int, failed: int) -> None:
        """As one of several processes: progress as a line the parent reads."""
        self.stderr.write(PROGRESS + json.dumps([done, failed]))
        self.stderr.flush()

    def stop_with_parent(self) -> None:
        """As one of several processes: stop as at Ctrl-C (the rows true,
        the summary printed) when the parent is gone, killed or not."""

        def watch() -> None:
            sys.stdin.read()  # the parent's end of the pipe closes when it ends
            os.kill(os.getpid(), signal.SIGINT)

        # Stopped with SIGINT by its parent, or by itself, even where SIGINT
        # is ignored (a shell's background job, and every process it starts).
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
        threading.Thread(target=watch, daemon=True).start()

    def enqueue(self) -> None:
        size = self.options["batch_size"]
        if self.options["retry"]:
            count = 0
            for pk in Customer.objects.outbox().values_list("pk", flat=True).iterator(chunk_size=size):
                tasks.configured().enqueue(pk)
                count += 1
            self.stdout.write(f"Enqueued {count} outbox rows as {count} tasks.")
            return
        chunks = 0
        for objects in self.selections():
            label = objects.model._meta.label_lower
            for chunk in bulk.chunks(objects.values_list("pk", flat=True).iterator(chunk_size=size), size):
                tasks.configured(tasks.sync_objects).enqueue(label, [bulk.jsonable(pk) for pk in chunk])
                chunks += 1
        self.stdout.write(f"Enqueued {chunks} chunk tasks of up to {size} objects for the workers.")

    def drift_check(self) -> None:
        drift = reconcile.check(bulk_client(1), self.selections(), self.options["batch_size"])
        if self.selected:
            # Customers of what was not selected are not orphans: a partial
            # check cannot tell, so it reports none (a full check does).
            drift.orphans = []
        if self.options["json"]:
            self.stdout.write(json.dumps(drift.as_dict(), indent=2))
        else:
            self.stdout.write(
                f"In sync: {drift.in_sync}. Missing in Autumn: {len(drift.missing)}. "
                f"Fields differ: {len(drift.differing)}. Orphans in Autumn: {len(drift.orphans)}. "
                f"Customers without an id: {drift.idless}. Objects the mapping refuses: {len(drift.invalid)}."
            )
            for who, customer_id in drift.missing[:50]:
                self.stdout.write(f"  missing   {who} -> {customer_id}")
            for who, customer_id, fields in drift.differing[:50]:
                self.stdout.write(f"  differs   {who} -> {customer_id}: {', '.join(fields)}")
            for customer_id in drift.orphans[:50]:
                self.stdout.write(f"  orphan    {customer_id}")
            for who, error in drift.invalid[:50]:
                self.stdout.write(f"  invalid   {who}: {error}")
        if self.options["repair"] and drift.repairable:
            return self.repair(drift)
        if drift.found:
            raise CommandError(_advice(drift), returncode=1)

    def repair(self, drift: reconcile.Drift) -> None:
        """Fix what the check found (``--check --repair``); then only what a
        repair cannot fix (orphans, objects the mapping refuses) is drift."""
        count = len(drift.missing) + len(drift.differing)
        if self.options["dry_run"]:
            missing, differing = len(drift.missing), len(drift.differing)
            self.stdout.write(f"Dry run: would get_or_create {missing} and update {differing} customers.")
            raise CommandError(_advice(drift), returncode=1)
        concurrency = self.options["concurrency"]
        summary = reconcile.repair(
            bulk_client(concurrency), drift, concurrency=concurrency, batch_size=self.options["batch_size"]
        )
        self.print_summary(summary, "repair")
        if summary.failed and self.options["fail_on_error"]:
            raise CommandError(
                f"{summary.failed} of {count} repairs failed; see above. Their rows hold the errors."
            )
        if drift.orphans or drift.invalid:
            remaining = reconcile.Drift(orphans=drift.orphans, invalid=drift.invalid)
            raise CommandError(_advice(remaining), returncode=1)

    def pull(self) -> None:
        summary = reconcile.pull(
            bulk_client(1), batch_size=self.options["batch_size"], dry_run=self.options["dry_run"]
        )
        self.print_summary(summary, "pull")

    def prune(self) -> None:
        client = bulk_client(self.options["concurrency"])
        every = [source.get_queryset() for source in sources.registry()]
        orphans = reconcile.check(client, every, self.options["batch_size"]).orphans
        env = mapping.current_env()
        if orphans and not self.options["dry_run"] and not self.options["no_input"]:
            answer = input(
                f"Delete {len(orphans)} customers from Autumn ({env}) that no local object accounts for? "
                "Type 'yes' to continue: "
            )
            if answer.strip().lower() != "yes":
                raise CommandError("Nothing deleted.")
        if self.options["verbosity"] >= 2:
            for customer_id in orphans:
                self.report(f"{'would delete' if self.options['dry_run'] else 'delete'} {customer_id}")
        summary = reconcile.prune(
            client, orphans, concurrency=self.options["concurrency"], dry_run=self.options["dry_run"]
        )
        self.print_summary(summary, "prune")
        if summary.failed and self.options["fail_on_error"]:
            raise CommandError(f"{summary.failed} deletes failed; see above.")

    # --- output -------------------------------------------------------------------------

    def report(self, line: str) -> None:
        self.progress_stream.write(
            ("\r" if getattr(self.progress_stream, "isatty", lambda: False)() else "") + line + "\n"
        )

    def print_summary(self, summary: bulk.Summary, mode: str) -> None:
        data = summary.as_dict()
        if self.options["part_of"] > 1:  # for the parent, apart from anything else said on stdout
            self.stdout.write(SUMMARY + json.dumps({**data, **_extra(summary)}))
            return
        if self.options["json"]:
            self.stdout.write(json.dumps({"mode": mode, **data, **_extra(summary)}, indent=2))
            return
        prefix = "Dry run: " if summary.dry_run else ""
        counts = ", ".join(
            f"{name} {data[name]}"
            for name in ("created", "updated", "unchanged", "deleted", "failed", "skipped")
        )
        extra = ", ".join(f"{name.replace('_', ' ')} {value}" for name, value in _extra(summary).items())
        calls = ", ".join(f"{route} {count}" for route, count in data["api_calls"].items()) or "none"
        self.stdout.write(f"{prefix}autumn_sync {mode} in {data['duration_seconds']:.1f} s: {counts}")
        if extra:
            self.stdout.write(f"  {extra}")
        self.stdout.write(f"  API calls: {calls}")
        for error in summary.errors[:100]:
            self.stdout.write(
                self.style.ERROR(
                    f"  {error['object'] or 'no object'}, customer {error['customer_id']}: {error['error']}"
                )
            )
        if summary.failed > 100:
            self.stdout.write(f"  ... and {summary.failed - 100} more (each failed row holds its error)")

    def retry_hint(self) -> None:
        """After --retry: the rows it left because their retry time has not
        come, when the next is due and how to push them now; and the failed
        rows no retry picks up (Autumn refused them)."""
        now = timezone.now()
        failed = Customer.objects.filter(state=Customer.State.FAILED)
        later = Customer.objects.filter(
            state__in=[Customer.State.FAILED, Customer.State.PENDING, Customer.State.DELETING],
            next_attempt_at__gt=now,
        ).order_by("next_attempt_at")
        refused = failed.filter(next_attempt_at__isnull=True)
        waiting = list(later.values_list("next_attempt_at", "content_type_id", "object_id")[: HINT_ROWS + 1])
        if waiting:
            count, count_failed = later.count(), later.filter(state=Customer.State.FAILED).count()
            due = waiting[0][0]
            when = f"{timezone.localtime(due):%Y-%m-%d %H:%M:%S %Z} (in {_until(due, now)})"
            subject = "1 customer waits" if count == 1 else f"{count} customers wait"
            if count_failed:
                subject += (
                    " after a failure" if count_failed == count else f" ({count_failed} after a failure)"
                )
            first = "it is due" if count == 1 else "the first is due"
            self.stdout.write(self.style.WARNING(f"{subject} for a retry: {first} at {when}."))
            self.stdout.write(
                f"  --retry sends only what is due. To push {'it' if count == 1 else 'them'} now: "
                + _push_now(waiting, count)
            )
        refused_count = refused.count()
        if refused_count:
            objects = list(refused.values_list("content_type_id", "object_id")[: HINT_ROWS + 1])
            subject = "1 customer" if refused_count == 1 else f"{refused_count} customers"
            self.stdout.write(
                self.style.WARNING(
                    f"{subject} failed and {'waits' if refused_count == 1 else 'wait'} for a fix: Autumn "
                    "refused the change, so --retry does not send it again. Each error is on its row "
                    "(admin: Autumn customer mirrors, state Failed)."
                )
            )
            self.stdout.write(
                "  Once the cause is fixed, push again: "
                + _push_now([(None, *linked) for linked in objects], refused_count, waiting=False)
            )


#: How a process of a push in several tells the parent its progress (on
#: stderr) and its summary (on stdout), apart from anything else it says.
PROGRESS = "autumn_sync progress: "
SUMMARY = "autumn_sync summary: "


@contextlib.contextmanager
def _stopping_on_sigterm(children: list[subprocess.Popen[str]]) -> Iterator[None]:
    """While the processes of a push run: SIGTERM (a deploy, a container
    stopped, ``timeout``) stops them too, at once; the rows they leave are
    true, as when a single process is killed."""

    def stop(signum: int, frame: Any) -> None:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(5)
        raise CommandError(
            "Stopped by SIGTERM, with its processes. Every row is in a true state; run autumn_sync "
            "again to finish.",
            returncode=128 + signal.SIGTERM,
        )

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        # None: a handler installed from C (uWSGI), which Python cannot put back.
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _settings_module() -> str | None:
    """The settings the processes of a push read (as Django's own commands
    find them); None when this process was configured in code."""
    return os.environ.get("DJANGO_SETTINGS_MODULE") or None


def _processes(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of processes (1 or more) nor 'auto'")
    return count


def _shard(value: str) -> tuple[int, int]:
    number, _, count = value.partition("/")
    try:
        shard = (int(number), int(count))
    except ValueError:
        shard = (0, 0)
    if not 1 <= shard[0] <= shard[1]:
        raise argparse.ArgumentTypeError(f"{value!r} is not K/N with 1 <= K <= N, e.g. 1/4")
    return shard


#: Rows a hint names by their objects before it says "a full push" instead.
HINT_ROWS = 10


def _until(moment: datetime.datetime, now: datetime.datetime) -> str:
    """How long until ``moment``: "42 seconds", "5 minutes", "2 hours"."""
    seconds = max(0, round((moment - now).total_seconds()))
    if seconds < 60:
        return f"{seconds} second{'' if seconds == 1 else 's'}"
    return timeuntil(moment, now, depth=1).replace("\xa0", " ")


def _push_now(rows: list[tuple[Any, Any, Any]], count: int, *, waiting: bool = True) -> str:
    """The command that pushes these rows now: by their objects when there
    are few, each has one and all are of one model, else a full push (which
    does not wait either)."""
    types = {content_type for _, content_type, _ in rows}
    ids = [object_id for _, _, object_id in rows]
    source = sources.registry().for_content_type_id(types.pop()) if len(types) == 1 else None
    if count <= HINT_ROWS and None not in ids and source is not None:
        if source.model_class is get_user_model():
            command = f"manage.py autumn_sync --users {' '.join(ids)}"
        else:
            command = f"manage.py autumn_sync --model {source.label} --ids {' '.join(ids)}"
        return f"{command} (a push does not wait for retry times)" if waiting else command
    return "manage.py autumn_sync" + (" (a full push does not wait for retry times)" if waiting else "")


def _advice(drift: reconcile.Drift) -> str:
    """What fixes the drift found, command by command."""
    steps = []
    if drift.repairable:
        steps.append(
            f"manage.py autumn_sync --check --repair creates the {len(drift.missing)} missing and updates "
            f"the {len(drift.differing)} differing customers"
        )
    if drift.orphans:
        steps.append(f"manage.py autumn_sync --prune deletes the {len(drift.orphans)} orphans (after asking)")
    if drift.invalid:
        steps.append(f"fix the mapping of the {len(drift.invalid)} objects it refuses (see above)")
    return "Drift found: " + "; ".join(steps) + "."


def _extra(summary: bulk.Summary) -> dict[str, int]:
    return {name: summary.counts[name] for name in bulk.EXTRA_WORDS if summary.counts[name]}
