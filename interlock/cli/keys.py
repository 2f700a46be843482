"""``interlock keys``: create, list or revoke API keys, in the database directly (no API key needed)."""

from __future__ import annotations

import argparse
import json
import sys

from actors.runtime import Runtime
from interlock.settings import Settings
from models.security import create_key, list_keys, revoke_key
from web.presenters import key_view

__all__ = ["run"]


def run(settings: Settings, args: argparse.Namespace) -> int:
    runtime = Runtime.open(settings)
    try:
        with runtime.sessions.begin() as session:
            if args.keys_action == "create":
                try:
                    new = create_key(session, tenant=args.tenant, scopes=args.scope.replace(" ", "").split(","))
                except ValueError as exc:
                    print(f"interlock: {exc}", file=sys.stderr)
                    return 2
                session.flush()
                view = {**key_view(new.record), "key": new.key}
                if args.json:
                    print(json.dumps(view))
                else:
                    print(f"key {view['id']} for tenant {view['tenant']} ({', '.join(view['scopes'])}):")
                    print(f"  {new.key}")
                    print("It is shown only now: store it safely.")
            elif args.keys_action == "list":
                views = [key_view(k) for k in list_keys(session, tenant=args.tenant)]
                if args.json:
                    print(json.dumps(views))
                for v in [] if args.json else views:
                    state = f"revoked {v['revoked_at']}" if v["revoked_at"] else "active"
                    print(f"{v['id']}  {v['tenant']:<16} {','.join(v['scopes']):<24} {v['created_at']}  {state}")
            elif not revoke_key(session, args.key_id):
                print(f"interlock: no active key has the id {args.key_id}", file=sys.stderr)
                return 1
            else:
                print(f"key {args.key_id} revoked")
    finally:
        runtime.close()
    return 0
