#!/usr/bin/env python3
"""Mutation testing of the security-deciding modules with mutmut, one module at a time.

Each module is mutated in a fresh copy of the checkout (its tracked files) and judged by its
own fast test subset (MODULES below), so a run fits on 2 cores. mutmut maps every test to the
functions it runs and, for each mutant, runs only the tests that reach the mutated function.

    tools/mutation.py                      # the high-value modules (HIGH)
    tools/mutation.py gateway/authz.py     # named modules
    tools/mutation.py --all                # every module in MODULES
    tools/mutation.py --jobs 2 --out mutation-report.md

Prints, per module, killed / timeout / survived / other and the score (killed or timed out, over
all judged mutants; a mutant no test reaches counts as undetected), then every survivor as a
diff; writes the same as Markdown to --out. Exit 1 when a module could not be run, or mutmut
left mutants unchecked (a test of the subset fails on the unmutated code). Needs the
`mutation` extra: pip install -e '.[test,mutation]'.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The upstream client and the streaming forward: every in-process test that talks to an upstream.
PROXY_TESTS = [
    "tests/core/test_proxy.py",
    "tests/core/test_upstream_client.py",
    "tests/core/test_fastdoor.py",
    "tests/core/test_pool_edges.py",
    "tests/core/test_pool_reuse.py",
    "tests/core/test_forward_edges.py",
    "tests/core/test_forward_websocket.py",
    "tests/core/test_form_bodies.py",  # the form scan the body passes through
    # Their `serve` subprocess tests run code mutmut does not instrument: left out.
    "--deselect=tests/core/test_proxy.py::test_memory_stays_bounded_for_50mb_transfers",
    "--deselect=tests/core/test_upstream_client.py::test_slow_client_reading_50mb_keeps_gateway_memory_flat",
    "--deselect=tests/core/test_upstream_client.py::test_serve_on_either_event_loop",
    "--deselect=tests/core/test_fastdoor.py::test_tls_listener_on_uvloop_serves_fast_and_hands_over",
]
# module -> its fast test subset: in-process tests only (mutmut cannot see into `serve`
# subprocesses), the ones that exercise the module's decisions.
MODULES: dict[str, list[str]] = {
    "gateway/authz.py": [
        "tests/gates/test_authz_unit.py",
        "tests/gates/test_scope_matrix.py",
        "tests/gates/test_agency.py",
        "tests/gates/test_identity.py",
    ],
    "gateway/pipeline.py": [
        "tests/gates/test_decisions.py",
        "tests/gates/test_refusals.py",
        "tests/core/test_hostile.py",
        "tests/gates/test_identity.py",
        # Only the in-process tests of these two files: their `serve` subprocess tests run code
        # mutmut does not instrument (and fail under it), so they would judge nothing.
        "tests/ops/test_shadow_openapi.py::test_shadow_route_forwards_refusal_and_counts_it",
        "tests/ops/test_shadow_openapi.py::test_shadow_route_allowed_request_is_not_counted",
        "tests/ops/test_shadow_openapi.py::test_non_shadow_route_still_refuses",
        "tests/ops/test_metrics_logs.py::test_requests_total_exact_label_set_and_count",
    ],
    "gateway/surface/paths.py": ["tests/core/test_paths.py", "tests/core/test_route_properties.py"],
    "gateway/surface/matcher.py": ["tests/core/test_matcher.py", "tests/core/test_route_properties.py"],
    # The example-surface test reads policies/, which mutmut does not copy (also_copy: tests,
    # gateway): deselected, else the subset fails on the unmutated code.
    "gateway/surface/loader.py": [
        "tests/core/test_surface_loader.py",
        "tests/core/test_surface_loader_edges.py",
    ],
    "gateway/surface/model.py": [
        "tests/core/test_surface_model.py",
        "tests/core/test_matcher.py",
        "tests/gates/test_authz_unit.py",
        "tests/gates/test_scope_matrix.py",
        "tests/core/test_surface_loader.py",
    ],
    "gateway/auth/bearer.py": ["tests/auth/test_bearer.py", "tests/gates/test_refusals.py"],
    "gateway/auth/jwt.py": [
        "tests/auth/test_jwt.py",
        "tests/auth/test_jwt_edges.py",
        "tests/auth/test_jwks.py",  # key withdrawal, the cache's absolute age, jwks_max_stale
        "tests/core/test_config_jwt_limits.py",
        "tests/gates/test_jwt_scope_rule.py",  # through authenticator_for, in process
    ],
    "gateway/auth/jwks.py": [
        "tests/auth/test_jwks.py",
        "tests/auth/test_jwks_edges.py",
        "tests/auth/test_jwt.py",  # the jwks-* environments: keys by kid and algorithm
        "tests/auth/test_jwt_edges.py",
    ],
    "gateway/auth/ratelimit.py": [
        "tests/auth/test_ratelimit.py",
        "tests/gates/test_refusals.py",
        "tests/gates/test_decisions.py",  # failed authentications counted per client address
        "tests/gates/test_identity.py",
    ],
    "gateway/tokens/secret.py": ["tests/tokens/test_secret.py", "tests/tokens/test_validator.py"],
    "gateway/tokens/validator.py": [
        "tests/tokens/test_validator.py",
        "tests/tokens/test_validator_races.py",
        "tests/tokens/validator/test_decisions.py",
        "tests/tokens/validator/test_loops.py",
    ],
    # The service's rules are the same on either store: only the SQLite half of its tests (the
    # PostgreSQL half doubles each mutant's run and starts a server in every mutant's process).
    "gateway/tokens/service.py": [
        "tests/tokens/test_service.py",
        "tests/tokens/test_service_edges.py",  # exact refusals, whole seconds, workspaces, audit
        "tests/tokens/test_service_rotation.py",  # rotate and revoke_by_value, in process
        "-k",
        "not postgresql",
    ],
    "gateway/tokens/sqlite.py": [
        "tests/tokens/test_sqlite_store.py",
        "tests/tokens/test_sqlite_store_edges.py",  # ping on a replaced file, refusals, the feed's pages
        "tests/tokens/test_sqlite_reader.py",
        "tests/tokens/test_migrations.py",
        "tests/tokens/test_store_lifecycle.py",
        "tests/tokens/test_sqlite_wal_race.py",  # two first opens racing for WAL
    ],
    "gateway/proxy/headers.py": [
        "tests/core/test_hostile.py",
        "tests/gates/test_identity.py",
        "tests/core/test_headers_edges.py",
        # The header tests of test_proxy.py (its 50 MB memory test runs `serve` in a subprocess).
        "tests/core/test_proxy.py::test_request_headers_kept",
        "tests/core/test_proxy.py::test_response_status_and_headers",
        "tests/core/test_proxy.py::test_set_cookie_headers_kept_apart",
        "tests/core/test_proxy.py::test_connection_named_header_removed_others_kept",
        "tests/core/test_proxy.py::test_connection_cannot_remove_gateway_headers",
        "tests/core/test_proxy.py::test_hop_by_hop_response_headers_stripped",
        "tests/core/test_proxy.py::test_never_both_content_length_and_transfer_encoding",
        "tests/core/test_proxy.py::test_valid_request_id_kept",
        "tests/core/test_proxy.py::test_invalid_request_id_replaced",
        "tests/core/test_proxy.py::test_request_id_echoed_on_refusals",
        "tests/core/test_proxy.py::test_request_id_echoed_on_forwarded_responses",
        "tests/core/test_proxy.py::test_forwarded_headers_set_by_gateway",
        "tests/core/test_proxy.py::test_untrusted_client_forwarding_headers_replaced",
        "tests/core/test_proxy.py::test_trusted_proxy_forwarding_headers_kept_and_appended",
        "tests/core/test_proxy.py::test_trusted_proxy_multiple_xff_headers_all_kept",
    ],
    "gateway/proxy/forward.py": PROXY_TESTS,
    "gateway/proxy/websocket.py": [
        "tests/core/test_websocket_credentials.py",
        "tests/core/test_websocket_handshake.py",
        "tests/core/test_websocket_edges.py",
        "tests/core/test_proxy.py::test_websocket_echo_through_gateway",
        "tests/core/test_proxy.py::test_websocket_to_dead_upstream_is_502",
        "tests/core/test_forward_websocket.py::test_a_wss_upstream_is_verified_with_its_ca_file",
    ],
    # Security-deciding modules the first map missed: JWT claim mapping, the minting ceiling,
    # the form-body method-override scan, the loop-thread token read and the upstream client.
    "gateway/auth/claims.py": [
        "tests/auth/test_jwt.py",
        "tests/auth/test_claims_edges.py",
        "tests/auth/test_jwt_edges.py",
        "tests/gates/test_jwt_scope_rule.py",
    ],
    "gateway/tokens/policy.py": [
        "tests/tokens/test_policy.py",  # hand-built hostile callers, and hypothesis over scope sets
        "tests/tokens/test_service.py",
        "-k",
        "not postgresql",
    ],
    "gateway/proxy/formscan.py": [
        "tests/core/test_formscan.py",
        "tests/core/test_form_bodies.py",
        "tests/core/test_formscan_edges.py",
        "tests/core/test_hostile.py",  # `_method` in the query string (query_names_method)
    ],
    "gateway/tokens/sqlite_reader.py": [
        "tests/tokens/test_sqlite_reader.py",
        "tests/tokens/test_sqlite_store.py",
        "tests/tokens/test_sqlite_store_edges.py",
        "tests/tokens/test_store_lifecycle.py",
    ],
    "gateway/proxy/pool.py": PROXY_TESTS,
}
# Modules without a function body (dataclasses only): mutmut 3 mutates function bodies, so it
# makes no mutant in them and a run would stop early. principal.py's 28 field-default mutations
# were applied by hand against the tests below instead (README, "Mutation testing").
NO_FUNCTIONS: dict[str, list[str]] = {
    "gateway/auth/principal.py": [
        "tests/gates/test_identity.py",
        "tests/gates/test_scope_matrix.py",
        "tests/gates/test_authz_unit.py",
        "tests/core/test_websocket_credentials.py::test_anonymous_websocket_outlives_the_credential_checks",
    ],
}
HIGH = [
    "gateway/authz.py",
    "gateway/pipeline.py",
    "gateway/surface/paths.py",
    "gateway/surface/matcher.py",
    "gateway/auth/bearer.py",
    "gateway/tokens/secret.py",
]
# "no": no test of the subset reaches the mutant, as undetected as a survivor.
JUDGED = ("killed", "survived", "timeout", "suspicious", "segfault", "no")


@dataclass
class Outcome:
    module: str
    counts: dict[str, int] = field(default_factory=dict)
    survivors: list[tuple[str, str]] = field(default_factory=list)  # name, diff
    seconds: float = 0.0
    error: str = ""

    @property
    def judged(self) -> int:
        return sum(self.counts.get(k, 0) for k in JUDGED)

    @property
    def detected(self) -> int:
        """Killed by a failing test, or by a test that no longer finishes (an endless loop)."""
        return self.counts.get("killed", 0) + self.counts.get("timeout", 0)

    @property
    def score(self) -> float:
        return 100.0 * self.detected / self.judged if self.judged else 0.0


def _checkout_copy(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(
        b"\0"
    )
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file():
            target = dest / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)


def _mutmut(work: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": "", "PY_COLORS": "0"}
    return subprocess.run(
        [sys.executable, "-m", "mutmut", *args],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


def _setup_cfg(module: str, tests: list[str]) -> str:
    """mutmut's settings; a list is one item per line."""

    def items(values: list[str]) -> str:
        return "".join(f"\n    {v}" for v in values)

    return (
        "[mutmut]\n"
        f"source_paths={items([module])}\n"
        # policies/: the example surface some subsets load.
        f"also_copy={items(['tests', 'gateway', 'policies'])}\n"
        f"pytest_add_cli_args_test_selection={items(tests)}\n"
        # -x: a mutant is killed at its first failing test.
        f"pytest_add_cli_args={items(['-x', '-q', '-p', 'no:cacheprovider'])}\n"
    )


def run_module(module: str, tests: list[str], jobs: int, keep: bool) -> Outcome:
    out = Outcome(module)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="scopegate-mutation-"))
    try:
        _checkout_copy(work)
        (work / "setup.cfg").write_text(_setup_cfg(module, tests))
        done = _mutmut(work, "run", "--max-children", str(jobs))
        results = _mutmut(work, "results", "--all", "true")
        for line in results.stdout.splitlines():
            m = re.match(r"\s*(\S+): (.+)$", line)
            if not m:
                continue
            name, full = m.group(1), m.group(2).strip()
            status = full.split()[0]
            out.counts[status] = out.counts.get(status, 0) + 1
            if status in ("survived", "timeout", "suspicious", "no"):
                diff = _mutmut(work, "show", name).stdout
                changed = "\n".join(
                    ln for ln in diff.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")
                )
                out.survivors.append((f"{name} ({full})", changed))
        if not out.counts or out.counts.get("not", 0):
            # "not checked": mutmut stopped before judging them (a test of the subset failed
            # on the unmutated code, often one that runs `serve` in a subprocess).
            out.error = (done.stdout[-2000:] + done.stderr[-2000:]).strip() or "mutmut produced no results"
    finally:
        out.seconds = time.monotonic() - started
        if keep:
            print(f"  work dir kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return out


def report(outcomes: list[Outcome]) -> str:
    lines = [
        "| module | killed | timeout | survived | other | score | time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    detected = judged = 0
    for o in outcomes:
        c = o.counts
        other = sum(v for k, v in c.items() if k not in ("killed", "timeout", "survived"))
        lines.append(
            f"| {o.module} | {c.get('killed', 0)} | {c.get('timeout', 0)} | {c.get('survived', 0)} "
            f"| {other} | {o.score:.1f} % | {o.seconds:.0f} s |"
        )
        detected += o.detected
        judged += o.judged
    if judged:
        lines.append(f"| **all** | | | | | **{100.0 * detected / judged:.1f} %** | |")
    for o in outcomes:
        if o.error:
            lines += ["", f"## {o.module}: not run", "", "```", o.error, "```"]
        if o.survivors:
            lines += ["", f"## Survivors in {o.module}", ""]
            for name, diff in o.survivors:
                lines += [f"- `{name}`", "", "```diff", diff, "```", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="modules to mutate (default: the high-value ones)")
    parser.add_argument("--all", action="store_true", help="every module in the map")
    parser.add_argument("--jobs", type=int, default=2, help="mutants run in parallel (default 2)")
    parser.add_argument("--out", default="", help="also write the report (Markdown) here")
    parser.add_argument("--keep", action="store_true", help="keep each module's work dir")
    args = parser.parse_args(argv)
    modules = list(MODULES) if args.all else (args.modules or HIGH)
    for module in [m for m in modules if m in NO_FUNCTIONS]:
        print(f"{module}: no function body, so mutmut makes no mutant (see NO_FUNCTIONS)", file=sys.stderr)
        modules.remove(module)
    unknown = [m for m in modules if m not in MODULES]
    if unknown:
        parser.error(f"no test subset mapped for {unknown[0]} (see MODULES)")
    outcomes = []
    for module in modules:
        print(f"mutating {module} against {' '.join(MODULES[module])}", file=sys.stderr, flush=True)
        outcome = run_module(module, MODULES[module], args.jobs, args.keep)
        print(f"  {outcome.counts} score {outcome.score:.1f} % in {outcome.seconds:.0f} s", file=sys.stderr)
        outcomes.append(outcome)
    text = report(outcomes)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 1 if any(o.error for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
