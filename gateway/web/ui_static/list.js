// scopegate's token page (plain JavaScript modules, no build step, no third-party code).
// The token list, and revoke with a confirmation.

import { $, api, errorText, exactTime, relative, showSignIn, state, t } from "./common.js";

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
    head.append(name, badge(t("status." + status), "status-" + status), prefix);

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

    li.append(head, scopes, meta);
    if (!tok.revoked_at) {
      const revoke = document.createElement("button");
      revoke.type = "button";
      revoke.className = "danger revoke";
      revoke.textContent = t("list.revoke");
      revoke.setAttribute("aria-label", t("list.revoke_label", { name: tok.name }));
      revoke.addEventListener("click", () => askRevoke(tok, revoke));
      li.appendChild(revoke);
    }
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
