"""``taskstream revoke``: revoke tasks by id from the command line (``app.control.revoke``)."""

from __future__ import annotations

import argparse
import json

from taskstream.app import App
from taskstream.loading import load_app


def revoke(args: argparse.Namespace) -> int:
    app = load_app(args.app) if args.app else App("taskstream")
    try:
        app.control.revoke(args.task_ids, terminate=args.terminate)
    finally:
        app.close()
    for task_id in args.task_ids:
        print(json.dumps({"task_id": task_id, "revoked": True, "terminate": args.terminate}))
    return 0
