"""``nbserve target|token|audit ...`` and ``nbserve agent init-tls``: thin mappings onto
``nbserve._admin`` and ``nbserve._tls``. Errors are printed by ``nbserve._cli.main``."""

from __future__ import annotations

import argparse
import datetime as _dt
import os
from pathlib import Path
from typing import Any

from ._cli_output import table


def _when(ts: float | None) -> str:
    return "" if ts is None else _dt.datetime.fromtimestamp(ts, _dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# -- targets ---------------------------------------------------------------------------


def _cmd_target(args: argparse.Namespace) -> int:
    from ._admin import Target, add_target, list_targets, remove_target

    if args.action == "add":
        if not args.name or not args.url or not args.token_file:
            raise SystemExit("usage: nbserve target add NAME URL --token-file PATH [--fingerprint FP | --ca-file F]")
        target = Target(args.name, args.url, str(Path(args.token_file).expanduser().resolve()),
                        fingerprint=args.fingerprint, ca_file=args.ca_file, insecure=args.insecure)
        who = add_target(target)  # verifies the certificate and the token first
        print(f"target {target.name}: {target.url} (token {who['name']!r}, role {who['role']})")
        return 0
    if args.action == "remove":
        remove_target(args.name)
        print(f"target {args.name} removed")
        return 0
    rows = [{"name": t.name, "url": t.url, "verified_by": "fingerprint" if t.fingerprint else
             "ca file" if t.ca_file else "none (http)" if t.insecure else "system CAs",
             "token_file": t.token_file} for t in list_targets()]
    print(table(rows, ["name", "url", "verified_by", "token_file"]))
    return 0


# -- tokens ----------------------------------------------------------------------------


def _write_secret(path: str, secret: str) -> None:
    fd = os.open(Path(path).expanduser(), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")


def _show_new(token: dict[str, Any], out: str | None) -> None:
    if out:
        _write_secret(out, token["token"])
        print(f"token {token['name']} ({token['role']}) written to {out}; expires {_when(token['expires_at']) or 'never'}")
    else:
        print(token["token"])
        print(f"# token {token['name']} ({token['role']}); shown once; expires "
              f"{_when(token['expires_at']) or 'never'}")


def _cmd_token(args: argparse.Namespace) -> int:
    from ._admin import create_token, list_tokens, revoke_token, rotate_token

    if args.action == "create":
        if not args.name or not args.role:
            raise SystemExit("usage: nbserve token create NAME --role ROLE [--deployment D ...]")
        _show_new(create_token(args.name, args.role, deployments=args.deployment, expires=args.expires,
                               target=args.target), args.out)
    elif args.action == "rotate":
        _show_new(rotate_token(args.name, grace=args.grace, target=args.target), args.out)
    elif args.action == "revoke":
        for row in revoke_token(args.name, target=args.target):
            print(f"revoked {row['name']} ({row['id']})")
    else:
        rows = [{**t, "deployments": ",".join(t["deployments"]) if t["deployments"] else "all",
                 "expires": _when(t["expires_at"]) or "never"}
                for t in list_tokens(all=args.all, target=args.target)]
        print(table(rows, ["name", "id", "role", "deployments", "state", "expires", "created_by"]))
    return 0


# -- audit -----------------------------------------------------------------------------


def _cmd_audit(args: argparse.Namespace) -> int:
    from ._admin import audit, verify_audit

    if args.verify:
        check = verify_audit(target=args.target)
        if check["ok"]:
            print(f"audit log intact: {check['records']} records, head {check['head']}")
            return 0
        print(f"audit log BROKEN at record {check['broken_at']}: {check['problem']}")
        return 1
    frame = audit(args.name, limit=args.limit, target=args.target)
    rows = [] if frame.empty else [
        {**r, "seq": seq, "ts": r["ts"].strftime("%Y-%m-%d %H:%M:%S"),
         "live": f"{r['before'] or '-'}->{r['after'] or '-'}" if r["deployment"] else ""}
        for seq, r in frame.iterrows()
    ]
    print(table(rows, ["seq", "ts", "actor", "source", "action", "deployment", "version", "live"]))
    return 0


# -- the serving host's certificate ---------------------------------------------------------


def init_tls(args: argparse.Namespace) -> int:
    from ._config import Home
    from ._tls import format_fingerprint, local_addresses, make_self_signed

    home = Home.resolve(args.home)
    out = Path(args.out).expanduser() if args.out else home.tls_dir
    cert, key = out / "agent.crt", out / "agent.key"
    if (cert.exists() or key.exists()) and not args.force:
        raise SystemExit(f"{cert} already exists; pass --force to replace it (clients pinned to it must "
                         "then be given the new fingerprint)")
    hosts = args.tls_host or local_addresses()
    fingerprint = make_self_signed(cert, key, hosts)
    print(f"certificate: {cert}\nkey:         {key} (mode 0600)\nfor:         {', '.join(hosts)}")
    print(f"SHA-256 fingerprint: {format_fingerprint(fingerprint)}")
    print(f"serve with: nbserve agent run --host 0.0.0.0 --port 8443 --tls-cert {cert} --tls-key {key}")
    return 0


def register(sub: Any) -> None:
    target = sub.add_parser("target", help="remote agents to deploy to",
                            description="Remote agents: add (verifies it now), list, remove.")
    target.add_argument("action", choices=["add", "list", "remove"])
    target.add_argument("name", nargs="?")
    target.add_argument("url", nargs="?", help="https://host:port of the agent")
    target.add_argument("--token-file", help="file holding the token (read at each connect, never copied)")
    target.add_argument("--fingerprint", help="the agent certificate's SHA-256 fingerprint (pinned)")
    target.add_argument("--ca-file", help="a CA bundle that signed the agent's certificate")
    target.add_argument("--insecure", action="store_true", help="allow plain http:// (token in clear text)")
    target.set_defaults(func=_cmd_target)

    token = sub.add_parser("token", help="access tokens of an agent (admin)",
                           description="Tokens with roles: admin, deployer, viewer, predict.")
    token.add_argument("action", choices=["create", "list", "revoke", "rotate"])
    token.add_argument("name", nargs="?")
    token.add_argument("--role", choices=["admin", "deployer", "viewer", "predict"])
    token.add_argument("--deployment", action="append", help="limit the token to this deployment (repeatable)")
    token.add_argument("--expires", default="90d", help='lifetime: "30d", "12h", "never" (default 90d)')
    token.add_argument("--grace", default="0", help='rotate: how long the old secret keeps working ("10m")')
    token.add_argument("--out", help="write the secret to this file (mode 0600) instead of printing it")
    token.add_argument("--all", action="store_true", help="list: include revoked and expired tokens")
    token.add_argument("--target", default=None, help="agent to talk to (default: local)")
    token.set_defaults(func=_cmd_token)

    audit = sub.add_parser("audit", help="who changed what, when, from where",
                           description="The agent's append-only, hash-chained audit log.")
    audit.add_argument("name", nargs="?", help="deployment (default: all)")
    audit.add_argument("--limit", type=int, default=50)
    audit.add_argument("--verify", action="store_true", help="recompute the hash chain")
    audit.add_argument("--target", default=None, help="agent to talk to (default: local)")
    audit.set_defaults(func=_cmd_audit)
