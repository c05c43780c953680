from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from ...emulator import cli


class Command(BaseCommand):
    help = (
        "Run a local emulator of Autumn's customers API (same options as python -m autumn_django.emulator)."
    )
    requires_system_checks: list[str] = []  # it serves Autumn; it needs no AUTUMN settings

    def add_arguments(self, parser: CommandParser) -> None:
        cli.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        import argparse

        cli.serve(argparse.Namespace(**options), out=self.stdout)
