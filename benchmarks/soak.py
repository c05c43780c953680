"""The issue's soak, run again and again: does any run leave an orphan?

Runs tests/services/test_soak.py (two db_worker processes on PostgreSQL,
the HTTP emulator with 20% 429/5xx, lost requests and replies, requests
held up to 2 s, three kill -9 of a worker and an outage, while users are
created, changed, rolled back, deleted and re-created) ``--runs`` times,
each in a pytest of its own with ``AUTUMN_SOAK_SECONDS`` of load and its
own seed, and prints a table of what each run did and found, read from
the ``SOAK ...`` line the test prints. Needs PostgreSQL (see
tests/settings_services.py).

    python benchmarks/soak.py [--runs 5] [--seconds 60] [--seed 1]

Exits 1 if any run failed; the output of a failed run is kept in
``<temp dir>/autumn-soak/run-N.log`` (``--logs`` to choose).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = [
    ("run", "run"),
    ("seed", "seed"),
    ("seconds", "s"),
    ("result", "result"),
    ("users", "users"),
    ("ops", "ops"),
    ("requests", "requests"),
    ("failures_injected", "5xx/429"),
    ("lost_requests", "lost req"),
    ("lost_replies", "lost rep"),
    ("held", "held"),
    ("outage_answers", "outage"),
    ("kills", "kills"),
    ("killed_mid_task", "mid-task"),
    ("tombstones", "gone"),
    ("orphans", "orphans"),
    ("lost", "lost"),
    ("stale", "stale"),
    ("duplicated", "dup"),
    ("left_rows", "left"),
    ("converge_s", "converge s"),
]


def run_once(number: int, seconds: float, seed: int, logs: Path) -> dict[str, str]:
    env = {**os.environ, "AUTUMN_SOAK_SECONDS": str(seconds), "AUTUMN_SOAK_SEED": str(seed)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        "--ds",
        "tests.settings_services",
        "tests/services/test_soak.py",
    ]
    started = time.monotonic()
    result = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=seconds + 1800
    )
    row = {"run": str(number), "seed": str(seed)}
    line = next((line for line in result.stdout.splitlines() if line.startswith("SOAK ")), "")
    row.update(re.findall(r"(\w+)=(\S+)", line))
    row["seconds"] = f"{time.monotonic() - started:.0f}"
    passed = result.returncode == 0 and "1 passed" in result.stdout
    row["result"] = "passed" if passed else ("failed" if line else "error")
    if not passed:
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"run-{number}.log"
        log.write_text(result.stdout + "\n--- stderr ---\n" + result.stderr)
        row["log"] = str(log)
    return row


def print_table(rows: list[dict[str, str]]) -> None:
    widths = [max(len(title), *(len(row.get(key, "-")) for row in rows)) for key, title in COLUMNS]
    print("  ".join(title.rjust(width) for (_, title), width in zip(COLUMNS, widths, strict=True)))
    for row in rows:
        print(
            "  ".join(row.get(key, "-").rjust(width) for (key, _), width in zip(COLUMNS, widths, strict=True))
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="how many soaks (default 5)")
    parser.add_argument("--seconds", type=float, default=60, help="seconds of load per soak (default 60)")
    parser.add_argument("--seed", type=int, default=1, help="the first run's seed; each run adds 1")
    parser.add_argument(
        "--logs",
        type=Path,
        default=Path(tempfile.gettempdir()) / "autumn-soak",
        help="where the output of failed runs is kept",
    )
    options = parser.parse_args()
    rows = []
    for number in range(1, options.runs + 1):
        row = run_once(number, options.seconds, options.seed + number - 1, options.logs)
        rows.append(row)
        log = f", output in {row['log']}" if "log" in row else ""
        print(f"run {number}: {row['result']} in {row['seconds']} s, orphans {row.get('orphans', '?')}{log}")
        sys.stdout.flush()
    print()
    print_table(rows)
    failed = [row for row in rows if row["result"] != "passed"]
    orphans = sum(int(row.get("orphans", 0)) for row in rows if row.get("orphans", "").isdecimal())
    print(f"\n{len(rows) - len(failed)}/{len(rows)} runs passed; {orphans} orphans in all.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
