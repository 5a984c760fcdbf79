// scopegate's token page (plain JavaScript modules, no build step, no third-party code).
// The token list, and revoke with a confirmation.

import { $, api, errorText, exactTime, relative, showSignIn, state, t } from "./common.js";
import { reveal } from "./create.js";

// What the API's `status` says (gateway/tokens/fields.py state()), as the page's status keys.
export const STATUSES = { active: "active", expired: "expired", "expired (idle)": "expired_idle", revoked: "revoked", "not yet valid": "not_yet_valid" };
export const OVERLAPS = [0, 3600, 86400];

export async function loadList() {
  const status = $("show-revoked").checked ? "all" : "active";
  try {
    const data = await api("GET", "/tokens?status=" + status);
    state.tokens = Array.isArray(data && data.tokens) ? data.tokens : [];
    renderList();
  } catch (err) {
    $("list-status").textContent = errorText(err);
    if (err.status === 401) showSignIn(false);
  }
}

export function statusOf(tok) {
  if (STATUSES[tok.status]) return STATUSES[tok.status];
  if (tok.revoked_at) return "revoked";
  if (tok.expires_at && Date.parse(tok.expires_at) <= Date.now()) return "expired";
  return "active";
}

export function timeCell(labelKey, iso, cls) {
  const wrap = document.createElement("div");
  wrap.className = "meta " + cls;
  const dt = document.createElement("dt");
  dt.textContent = t(labelKey);
  const dd = document.createElement("dd");
  if (iso) {
    const ms = Date.parse(iso);
    const time = document.createElement("time");
    time.dateTime = iso;
    time.title = exactTime(ms);
    time.textContent = relative(ms);
    dd.appendChild(time);
  } else {
    dd.textContent = t("list.never");
  }
  wrap.append(dt, dd);
  return wrap;
}

export function badge(text, cls) {
  const b = document.createElement("span");
  b.className = "badge " + cls;
  b.textContent = text;
  return b;
}

export function renderList() {
  const list = $("tokens");
  // A token some listed token was rotated from: it ends at its expiry (the overlap's end).
  const rotated = new Set(state.tokens.map((tok) => tok.rotated_from).filter(Boolean));
  const rows = state.tokens.map((tok) => {
    const li = document.createElement("li");
    li.className = "token";
    li.tabIndex = -1;
    li.dataset.tokenId = tok.id;
    const status = statusOf(tok);
    li.dataset.status = status;

    const head = document.createElement("div");
    head.className = "token-head";
    const name = document.createElement("h3");
    name.className = "token-name";
    name.textContent = tok.name;
    const prefix = document.createElement("code");
    prefix.className = "prefix";
    prefix.textContent = (tok.display_prefix || "") + "…";
    head.append(name, badge(t("status." + status), "status-" + status));
    const isRotated = rotated.has(tok.id) && !tok.revoked_at;
    if (isRotated) {
      li.dataset.rotated = "true";
      head.appendChild(badge(t("list.rotated"), "status-rotated"));
    }
    head.appendChild(prefix);

    const scopes = document.createElement("div");
    scopes.className = "scopes";
    scopes.setAttribute("aria-label", t("list.scopes"));
    for (const s of tok.scopes || []) scopes.appendChild(badge(s, "scope"));
    for (const target of tok.targets || []) scopes.appendChild(badge(target.kind + ":" + target.id, "target"));

    const meta = document.createElement("dl");
    meta.className = "metas";
    if (tok.project) {
      const p = document.createElement("div");
      p.className = "meta project";
      const dt = document.createElement("dt");
      dt.textContent = t("list.project");
      const dd = document.createElement("dd");
      dd.textContent = tok.project;
      p.append(dt, dd);
      meta.appendChild(p);
    }
    meta.appendChild(timeCell("list.created", tok.created_at, "created"));
    meta.appendChild(timeCell("list.expires", tok.expires_at, "expires"));
    meta.appendChild(timeCell("list.last_used", tok.last_used_at, "last-used"));
    if (tok.revoked_at) meta.appendChild(timeCell("list.revoked", tok.revoked_at, "revoked"));
    if (tok.not_before) meta.appendChild(timeCell("list.not_before", tok.not_before, "not-before"));
    if (Array.isArray(tok.allowed_cidrs) && tok.allowed_cidrs.length) {
      const n = document.createElement("div");
      n.className = "meta networks";
      const dt = document.createElement("dt");
      dt.textContent = t("list.networks");
      const dd = document.createElement("dd");
      for (const cidr of tok.allowed_cidrs) {
        const code = document.createElement("code");
        code.className = "cidr";
        code.textContent = cidr;
        dd.appendChild(code);
      }
      n.append(dt, dd);
      meta.appendChild(n);
    }

    li.append(head, scopes, meta);
    const actions = document.createElement("div");
    actions.className = "row-actions";
    if ((status === "active" || status === "not_yet_valid") && !isRotated) {
      const rotate = document.createElement("button");
      rotate.type = "button";
      rotate.className = "rotate";
      rotate.textContent = t("list.rotate");
      rotate.setAttribute("aria-label", t("list.rotate_label", { name: tok.name }));
      rotate.addEventListener("click", () => askRotate(tok, rotate));
      actions.appendChild(rotate);
    }
    if (!tok.revoked_at) {
      const revoke = document.createElement("button");
      revoke.type = "button";
      revoke.className = "danger revoke";
      revoke.textContent = t("list.revoke");
      revoke.setAttribute("aria-label", t("list.revoke_label", { name: tok.name }));
      revoke.addEventListener("click", () => askRevoke(tok, revoke));
      actions.appendChild(revoke);
    }
    if (actions.childElementCount) li.appendChild(actions);
    return li;
  });
  list.replaceChildren(...rows);
  if (!rows.length) {
    const empty = document.createElement("li");
    empty.className = "empty muted";
    empty.textContent = t("list.empty");
    list.appendChild(empty);
  }
}

// Revoke

export function askRevoke(tok, opener) {
  state.pendingRevoke = { tok, opener };
  $("confirm-body").textContent = t("revoke.body", { name: tok.name, prefix: (tok.display_prefix || "") + "…" });
  $("confirm-error").hidden = true;
  $("confirm").showModal();
  $("confirm-cancel").focus();
}

export async function confirmRevoke() {
  const pending = state.pendingRevoke;
  if (!pending) return;
  const ok = $("confirm-ok");
  ok.disabled = true;
  try {
    await api("DELETE", "/tokens/" + encodeURIComponent(pending.tok.id));
  } catch (err) {
    if (err.code !== "not_found") {
      $("confirm-error").textContent = errorText(err);
      $("confirm-error").hidden = false;
      ok.disabled = false;
      return;
    }
  }
  ok.disabled = false;
  state.pendingRevoke = null;
  const rows = [...document.querySelectorAll("#tokens [data-token-id]")];
  const at = rows.findIndex((r) => r.dataset.tokenId === pending.tok.id);
  $("confirm").close();
  await loadList();
  $("list-status").textContent = t("revoke.done", { name: pending.tok.name });
  // Focus the row that took its place, else the list heading.
  const after = [...document.querySelectorAll("#tokens [data-token-id]")];
  const still = after.find((r) => r.dataset.tokenId === pending.tok.id);
  const next = still || after[Math.min(at, after.length - 1)];
  (next || $("list-h")).focus();
}

export function cancelRevoke() {
  const pending = state.pendingRevoke;
  state.pendingRevoke = null;
  if ($("confirm").open) $("confirm").close();
  if (pending && pending.opener.isConnected) pending.opener.focus();
}

// Rotate: a successor with the same rights; the old secret works for the chosen overlap.

export function askRotate(tok, opener) {
  state.pendingRotate = { tok, opener };
  $("rotate-body").textContent = t("rotate.body", { name: tok.name, prefix: (tok.display_prefix || "") + "…" });
  const max = Number(state.session.max_rotation_overlap) || 0;
  const label = { 0: "rotate.none", 3600: "rotate.hour", 86400: "rotate.day" };
  // Never more than the server allows.
  $("overlap").replaceChildren(...OVERLAPS.filter((n) => n <= max).map((n) => new Option(t(label[n]), String(n))));
  $("rotate-error").hidden = true;
  $("rotate").showModal();
  $("rotate-cancel").focus();
}

export async function confirmRotate() {
  const pending = state.pendingRotate;
  if (!pending) return;
  const ok = $("rotate-ok");
  const overlap = Number($("overlap").value) || 0;
  ok.disabled = true;
  let created;
  try {
    created = await api("POST", "/tokens/" + encodeURIComponent(pending.tok.id) + "/rotate", overlap ? { overlap } : {});
  } catch (err) {
    $("rotate-error").textContent = errorText(err);
    $("rotate-error").hidden = false;
    ok.disabled = false;
    if (err.status === 401) showSignIn(false);
    return;
  }
  ok.disabled = false;
  state.pendingRotate = null;
  $("rotate").close();
  await loadList();
  $("list-status").textContent = t(overlap ? "rotate.done_overlap" : "rotate.done", { name: pending.tok.name });
  // The successor's secret, once, exactly as at creation.
  reveal(created);
}

export function cancelRotate() {
  const pending = state.pendingRotate;
  state.pendingRotate = null;
  if ($("rotate").open) $("rotate").close();
  if (pending && pending.opener.isConnected) pending.opener.focus();
}
