"""The command line: a thin shell over the same services the HTTP API uses."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn, TypeVar

from multidict import CIMultiDict
from yarl import URL

from .config import MINT_SECTIONS, STORE_SECTIONS, Config, default_config_path, load_config
from .errors import ConfigError, GatewayError, StartupError
from .observe import setup_logging

T = TypeVar("T")


USAGE = 2  # exit code of every usage error: a missing or unknown argument, a bad value


class CliError(Exception):
    """A one-line message for the user and an exit code; `prog` names the (sub)command."""

    def __init__(self, message: str, code: int = 1, prog: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.prog = prog

    def line(self, prog: str) -> str:
        hint = " (see --help)" if self.code == USAGE else ""
        return f"{self.prog or prog}: {self}{hint}"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, never argparse's usage block: `scopegate token create: --name is required`.
        raise CliError(_plain(message), USAGE, self.prog)


_COMMAND_DESTS = {
    "command": "a command",
    "token_command": "a token command (create, list, revoke or rotate)",
    "store_command": "a store command (migrate or copy)",
}


def _plain(message: str) -> str:
    """argparse's message, said plainly on one line."""
    if m := re.fullmatch(r"the following arguments are required: (.+)", message):
        names = [_COMMAND_DESTS.get(n, n.split("/")[-1]) for n in m.group(1).split(", ")]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        return f"{listed} {'is' if len(names) == 1 else 'are'} required"
    choice = r"argument (command|token_command|store_command): invalid choice: (.*?) \(choose from .*\)"
    if m := re.fullmatch(choice, message):
        return f"unknown command {m.group(2)}"
    if m := re.fullmatch(r"argument ([^:]+): (.*)", message, re.S):
        return f"{m.group(1).split('/')[-1]}: {m.group(2)}"
    return message.replace("\n", " ")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="scopegate", description="An authorization gateway in front of HTTP APIs.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def cmd(name: str, help: str) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help)
        c.add_argument("-c", "--config", help="config file (default $SCOPEGATE_CONFIG, then ./config.yaml)")
        return c

    s = cmd("serve", "run the gateway")
    s.add_argument("--host")
    s.add_argument("--port", type=int)
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--worker-id", default=None, help=argparse.SUPPRESS)
    s.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop (default uvloop)"
    )
    c = cmd("check", "validate config and surface files")
    c.add_argument("--format", choices=("text", "json"), default="text")
    c.add_argument("--openapi", help="report OpenAPI operations no route covers, and routes no operation has")
    cmd("routes", "print the route table")
    e = cmd("explain", "explain the decision for one request")
    e.add_argument("method")
    e.add_argument("url")
    e.add_argument("--token", help="the bearer credential to decide with")
    e.add_argument("--header", action="append", default=[], metavar="NAME:VALUE")
    t = sub.add_parser("token", help="mint, list and revoke API tokens in the store")
    tsub = t.add_subparsers(dest="token_command", required=True, parser_class=_Parser)
    tc = tsub.add_parser("create", help="mint a token; the secret is printed once")
    tc.add_argument("-c", "--config")
    tc.add_argument("--name", required=True)
    tc.add_argument("--workspace", required=True)
    tc.add_argument("--project")
    tc.add_argument("--scope", action="append", dest="scopes")
    tc.add_argument("--target", action="append", default=[], metavar="KIND:ID")
    tc.add_argument("--expires-in")
    tc.add_argument("--owner", default="cli")
    tc.add_argument("--allow-cidr", action="append", dest="allowed_cidrs", metavar="CIDR")
    tc.add_argument("--not-before", metavar="TIME", help="RFC 3339 time or Unix seconds")
    tc.add_argument("--json", action="store_true")
    tl = tsub.add_parser("list", help="list tokens (never a secret)")
    tl.add_argument("-c", "--config")
    tl.add_argument("--workspace")
    tl.add_argument("--status", choices=("active", "revoked", "all"), default="active")
    tl.add_argument("--json", action="store_true")
    tr = tsub.add_parser("revoke", help="revoke a token everywhere")
    tr.add_argument("-c", "--config")
    tr.add_argument("id")
    tt = tsub.add_parser("rotate", help="mint a successor; the old token ends after --overlap")
    tt.add_argument("-c", "--config")
    tt.add_argument("id")
    tt.add_argument("--overlap", help="how long the old secret keeps working (default 0)")
    tt.add_argument("--json", action="store_true")
    st = sub.add_parser("store", help="migrate the token store, or copy a SQLite store to PostgreSQL")
    stsub = st.add_subparsers(dest="store_command", required=True, parser_class=_Parser)
    stsub.add_parser("migrate", help="apply pending schema migrations").add_argument("-c", "--config")
    sc = stsub.add_parser("copy", help="copy every token (hashes only) from SQLite into PostgreSQL")
    sc.add_argument("-c", "--config", help="accepted for symmetry; copy reads only --from and --to")
    sc.add_argument("--from", dest="source", required=True, metavar="sqlite:///PATH")
    sc.add_argument("--to", dest="destination", required=True, metavar="postgresql://USER@HOST:PORT/DB")
    d = cmd("demo", "run the gateway on embedded defaults with an echo upstream")
    d.add_argument("--port", type=int, default=8080)
    d.add_argument(
        "--check", action="store_true", help="run the walkthrough itself and exit (0: all as shown)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    prog = "scopegate"
    try:
        args = _parse(argv)
        prog = _prog_of(args)
        return _dispatch(args)
    except CliError as exc:
        print(exc.line(prog), file=sys.stderr)
        return exc.code
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    except GatewayError as exc:
        # A value the service refused (400) is the caller's usage error; the rest are not.
        code = USAGE if exc.status == 400 else 1
        print(CliError(f"{exc.code}: {exc.detail}", code).line(prog), file=sys.stderr)
        return code
    except StartupError as exc:
        print(f"scopegate: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    words = list(sys.argv[1:] if argv is None else argv)
    if words and words[0].startswith("-") and words[0] not in ("-h", "--help"):
        # Options belong to a command; argparse would read the next word as the command.
        raise CliError(f"unknown option {words[0]} before the command", USAGE)
    args, extras = _parser().parse_known_args(words)
    if extras:
        first = extras[0]
        what = f"unknown option {first}" if first.startswith("-") else f"unexpected argument {first!r}"
        raise CliError(what, USAGE, _prog_of(args))
    return args


def _prog_of(args: argparse.Namespace) -> str:
    words = ["scopegate", getattr(args, "command", None), getattr(args, "token_command", None)]
    return " ".join(w for w in words if w)


def _config(args: argparse.Namespace, sections: set[str] | frozenset[str] | None = None) -> Config:
    return load_config(default_config_path(getattr(args, "config", None)), sections)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return _serve(args)
    if args.command == "check":
        from .check import run_check

        return run_check(default_config_path(args.config), args.format, args.openapi)
    if args.command == "routes":
        from .explain import print_routes

        return print_routes(_config(args, {"surface", "upstreams", "management"}))
    if args.command == "explain":
        return _run(_explain(_config(args), args))
    if args.command == "token":
        # Store commands read the settings they use and no others (no JWT secret needed).
        sections = {"create": MINT_SECTIONS}.get(args.token_command, STORE_SECTIONS)
        return _run(_token(_config(args, sections), args))
    if args.command == "store":
        return _run(_store(args))
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(args.port, args.check)
    raise CliError(f"unknown command {args.command!r}", USAGE)


def _run(coro: Awaitable[T]) -> T:
    async def wrapper() -> T:
        return await coro

    return asyncio.run(wrapper())


def _serve(args: argparse.Namespace) -> int:
    from .serve import run_workers, serve

    path = default_config_path(args.config)
    cfg = load_config(path)
    setup_logging(cfg.log.level, cfg.log.format)
    host = args.host or cfg.listen.host
    port = args.port if args.port is not None else cfg.listen.port
    if args.workers < 1:
        raise CliError("--workers must be at least 1", USAGE)
    if args.workers > 1 and args.worker_id is None:
        return run_workers(path, host, port, args.workers, args.loop)
    worker = args.worker_id or "0"
    with asyncio.Runner(loop_factory=_loop_factory(args.loop)) as runner:
        runner.run(
            serve(
                cfg,
                host,
                port,
                worker=worker,
                reuse_port=args.worker_id is not None,
                admin=worker == "0",
                ready=_announce if args.worker_id is None else None,
                settle_heap=True,
            )
        )
    return 0


def _loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:  # a platform without uvloop: the standard loop serves the same
        return None
    return uvloop.new_event_loop


async def _announce(bound: list[tuple[str, int]]) -> None:
    """One stdout line with the bound addresses, whatever the log level, so that whoever started
    `serve --port 0` (or `admin: {port: 0}`) learns the ports the kernel chose."""
    names = ("listening on", "admin on")
    print(
        "scopegate: " + ", ".join(f"{n} {h}:{p}" for n, (h, p) in zip(names, bound, strict=False)), flush=True
    )


async def _with_runtime(cfg: Config, body: Callable[[Any], Awaitable[T]]) -> T:
    from .web.runtime import Runtime

    rt = Runtime(cfg)
    await rt.store.open()
    try:
        return await body(rt)
    finally:
        await rt.validator.stop()
        await rt.store.close()


async def _explain(cfg: Config, args: argparse.Namespace) -> int:
    from .explain import explain

    method = args.method.upper()
    target = _raw_target(args.url)
    headers: CIMultiDict[str] = CIMultiDict()
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    for h in args.header:
        name, sep, value = h.partition(":")
        if not sep:
            raise CliError(f"--header {h!r}: expected NAME:VALUE", USAGE)
        headers.add(name.strip(), value.strip())
    return await explain(cfg, method, target, headers)


_ABSOLUTE_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)$", re.DOTALL)


def _raw_target(arg: str) -> str:
    """The request target exactly as serve would receive it: an absolute URL loses only its
    scheme and authority; nothing is decoded or normalised (dot segments reach path hygiene)."""
    m = _ABSOLUTE_RE.match(arg)
    if m is None:
        return arg
    try:
        URL(f"{m.group(1)}://{m.group(2)}")
    except ValueError as exc:
        raise CliError(f"bad URL {arg!r}: {exc}", USAGE) from None
    rest = m.group(3)
    return rest if rest.startswith("/") else "/" + rest


async def _store(args: argparse.Namespace) -> int:
    from .tokens.transfer import copy_store, migrate_store

    if args.store_command == "migrate":
        cfg = _config(args, STORE_SECTIONS)
        print(f"{cfg.store}: {await migrate_store(cfg.store, cfg.base_dir)}")
        return 0
    try:
        done = await copy_store(args.source, args.destination)
    except ValueError as exc:
        raise CliError(str(exc), 1, "scopegate store copy") from None
    print(
        f"copied {done.tokens} token(s) ({done.active} active), {done.targets} target(s), "
        f"{done.revocations} revocation(s)"
    )
    return 0


async def _token(cfg: Config, args: argparse.Namespace) -> int:
    from .tokens.service import record_json

    async def create(rt: Any) -> int:
        body: dict[str, Any] = {"name": args.name, "workspace": args.workspace, "owner": args.owner}
        if args.project:
            body["project"] = args.project
        if args.scopes is not None:
            body["scopes"] = args.scopes
        if args.expires_in is not None:
            body["expires_in"] = args.expires_in
        if args.allowed_cidrs:
            body["allowed_cidrs"] = args.allowed_cidrs
        if args.not_before is not None:
            nbf = args.not_before
            # ASCII digits only: str.isdigit() is also true of "²", which int() refuses, and of
            # other scripts' digits, which int() would read as Unix seconds.
            digits = nbf.isascii() and nbf.isdigit()
            body["not_before"] = int(nbf) if digits and len(nbf) < 16 else nbf
        if args.target:
            targets = []
            for t in args.target:
                kind, sep, tid = t.partition(":")
                if not sep or not kind or not tid:
                    raise CliError(f"--target {t!r}: expected KIND:ID", USAGE)
                targets.append({"kind": kind, "id": tid})
            body["targets"] = targets
        record, secret = await rt.service.create(None, body)
        if args.json:
            print(json.dumps(record_json(record, secret), indent=2))
        else:
            print(f"created {record.id} ({record.name}) scopes={' '.join(record.scopes)}")
            print("token (shown once, store it now):")
            print(secret)
        return 0

    async def listing(rt: Any) -> int:
        records = await rt.service.list(None, args.status, workspace=args.workspace)
        now, idle = rt.service.clock(), cfg.tokens.idle_ttl
        if args.json:
            print(json.dumps([record_json(r, now=now, idle_ttl=idle) for r in records], indent=2))
            return 0
        rows = [("ID", "NAME", "PREFIX", "WORKSPACE", "PROJECT", "SCOPES", "EXPIRES", "LAST USED", "STATUS")]
        for r in records:
            j = record_json(r, now=now, idle_ttl=idle)
            rows.append(
                (
                    r.id,
                    r.name,
                    r.display_prefix,
                    r.workspace,
                    r.project or "-",
                    " ".join(r.scopes),
                    j["expires_at"] or "-",
                    j["last_used_at"] or "-",
                    j["status"],
                )
            )
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        return 0

    async def revoke(rt: Any) -> int:
        await rt.service.revoke(None, args.id)
        print(f"revoked {args.id}")
        return 0

    async def rotate(rt: Any) -> int:
        body = {} if args.overlap is None else {"overlap": args.overlap}
        record, secret = await rt.service.rotate(None, args.id, body)
        if args.json:
            print(json.dumps(record_json(record, secret), indent=2))
        else:
            expires = record_json(record)["expires_at"]
            print(f"rotated {args.id} -> {record.id} ({record.name}) expires={expires}")
            print("token (shown once, store it now):")
            print(secret)
        return 0

    action = {"create": create, "list": listing, "revoke": revoke, "rotate": rotate}
    return await _with_runtime(cfg, action[args.token_command])
