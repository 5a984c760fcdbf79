"""The tokens table's row, in one shape for every store (their migrations keep the columns alike):
the column list, a record as those columns' values, and those values back as a record."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from .store import TokenRecord

COLUMNS = (
    "id, name, display_prefix, owner, workspace, project, scopes, created_at, expires_at, "
    "revoked_at, last_used_at, created_by, not_before, allowed_cidrs, rotated_from, revoke_at"
)


def values_of(record: TokenRecord) -> tuple[Any, ...]:
    """The record as the values of COLUMNS, in order (scopes and CIDRs space-separated)."""
    return (
        record.id,
        record.name,
        record.display_prefix,
        record.owner,
        record.workspace,
        record.project,
        " ".join(record.scopes),
        record.created_at,
        record.expires_at,
        record.revoked_at,
        record.last_used_at,
        record.created_by,
        record.not_before,
        " ".join(record.allowed_cidrs),
        record.rotated_from,
        record.revoke_at,
    )


def record_of(row: Sequence[Any], targets: Iterable[tuple[str, str]]) -> TokenRecord:
    """A row whose first columns are COLUMNS, with the token's targets, as a record."""
    return TokenRecord(
        id=row[0],
        name=row[1],
        display_prefix=row[2],
        owner=row[3],
        workspace=row[4],
        project=row[5],
        scopes=tuple(row[6].split()),
        targets=tuple(targets),
        created_at=row[7],
        expires_at=row[8],
        revoked_at=row[9],
        last_used_at=row[10],
        created_by=row[11],
        not_before=row[12],
        allowed_cidrs=tuple(row[13].split()),
        rotated_from=row[14],
        revoke_at=row[15],
    )


def list_filter(
    workspace: str | None, project_level_only: bool, status: str, placeholder: Callable[[int], str]
) -> tuple[str, list[Any]]:
    """The WHERE clause and its parameters for listing tokens; `placeholder(n)` spells the n-th
    bound parameter in the engine's style. Only fixed fragments reach the SQL text."""
    clauses: list[str] = []
    params: list[Any] = []
    if workspace is not None:
        params.append(workspace)
        clauses.append(f"workspace = {placeholder(len(params))}")
    if project_level_only:
        clauses.append("project IS NOT NULL")
    if status == "active":
        clauses.append("revoked_at IS NULL")
    elif status == "revoked":
        clauses.append("revoked_at IS NOT NULL")
    return " AND ".join(clauses) or "1 = 1", params
