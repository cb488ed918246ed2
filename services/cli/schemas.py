"""``taskstream schemas export|check``: the task schemas in ``schemas/`` against the code."""

from __future__ import annotations

import argparse
from pathlib import Path

from taskstream.cli import schema_files
from taskstream.loading import load_app


def schemas(args: argparse.Namespace) -> int:
    app = load_app(args.app)
    directory = Path(args.dir or app.settings.schemas_dir)
    if args.action == "export":
        for path in schema_files.export(app, directory):
            print(f"wrote {path}")
        return 0
    for line in schema_files.check(app, directory):
        print(line)
    print(f"{directory}: up to date with {args.app} ({len(app.tasks)} tasks)")
    return 0
