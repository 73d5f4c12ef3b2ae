"""`ordermail backup PATH` and `ordermail restore PATH` (daemon/store/backup.py does the work).

    backup PATH [--force]   a consistent copy of the SQLite database, while the daemon runs
    restore PATH            put a backup in the database's place (ordermail stopped)

`cli/main.py` adds these with `add_parsers(sub, common, parser_class)` and runs
them through `HANDLERS` before any store is opened: backup reads the
database without migrating it, and restore must not hold it open.
"""
from __future__ import annotations

from pathlib import Path

from daemon.store import backup


def add_parsers(sub, common, parser_class) -> None:
    save = sub.add_parser("backup", parents=[common],
                          help="copy the database to a file, consistent while the daemon runs (SQLite)")
    save.add_argument("path", type=Path, help="the backup file to write")
    save.add_argument("--force", action="store_true", help="replace the file if it exists")
    load = sub.add_parser("restore", parents=[common],
                          help="replace the database by a backup (stop ordermail first)")
    load.add_argument("path", type=Path, help="a file written by 'ordermail backup'")


def cmd_backup(args, settings) -> int:
    print(backup.backup(settings, args.path, force=args.force))
    return 0


def cmd_restore(args, settings) -> int:
    print(backup.restore(settings, args.path))
    return 0


HANDLERS = {"backup": cmd_backup, "restore": cmd_restore}
