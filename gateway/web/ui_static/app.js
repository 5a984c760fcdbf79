// scopegate's self-service token page. Plain JavaScript, no build step, no third-party code.
// It talks only to the management API under the mount this page is served from.
"use strict";

(function () {
  const LANGS = ["en", "es", "fr", "de", "pt"];
  const NAME_RE = /^[A-Za-z0-9 _.-]{1,100}$/;
  const ID_RE = /^[A-Za-z0-9._:@-]{1,128}$/;
  const KIND_RE = /^[a-z][a-z0-9_-]{0,39}$/;
  const DAY = 86400;
  const PRESETS = ["read", "write", "full", "custom", "agency"];
  const BUILTIN = ["read", "write", "full", "agency", "tokens:manage"];
  // The page lives at <mount>/ui/: the management API is <mount>.
  const MOUNT = location.pathname.replace(/\/ui(\/.*)?$/, "");

  const state = {
    lang: "en",
    messages: {},
    bearer: null, // a JWT handed over in the URL fragment, kept in memory only
    session: null,
    scopes: [], // [{name, description}] the signed-in user may mint
    tokens: [],
    pendingRevoke: null,
    afterReveal: null,
  };

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------------------------------------
  // Languages

  function t(key, vars) {
    let text = state.messages[key];
    if (text === undefined) text = key;
    if (vars) {
      for (const [k, v] of Object.entries(vars)) text = text.split("{" + k + "}").join(String(v));
    }
    return text;
  }

  function pickLanguage() {
    try {
      const saved = localStorage.getItem("scopegate.ui.lang");
      if (LANGS.includes(saved)) return saved;
    } catch (e) {
      /* storage may be off */
    }
    for (const tag of navigator.languages || [navigator.language || "en"]) {
      const base = String(tag).toLowerCase().split("-")[0];
      if (LANGS.includes(base)) return base;
    }
    return "en";
  }

  async function setLanguage(lang) {
    const resp = await fetch("i18n/" + lang + ".json", { credentials: "same-origin" });
    state.messages = await resp.json();
    state.lang = lang;
    document.documentElement.lang = lang;
    $("lang").value = lang;
    for (const el of document.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
    document.title = t("page.title");
    if (state.session) {
      renderWho();
      renderForm();
      renderList();
    }
  }

  // ---------------------------------------------------------------------------------------------
  // The management API

  class ApiError extends Error {
    constructor(status, code, detail) {
      super(detail || code);
      this.status = status;
      this.code = code;
      this.detail = detail || "";
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: "application/json", "X-Scopegate-CSRF": "1" };
    if (state.bearer) headers.Authorization = "Bearer " + state.bearer;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let resp;
    try {
      resp = await fetch(MOUNT + path, {
        method,
        headers,
        credentials: "same-origin",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(0, "network", "");
    }
    if (resp.status === 204) return null;
    let data = null;
    try {
      data = await resp.json();
    } catch (e) {
      data = null;
    }
    if (!resp.ok) {
      const code = data && typeof data.error === "string" ? data.error : "unknown";
      throw new ApiError(resp.status, code, data && data.detail);
    }
    return data;
  }

  function errorText(err) {
    const key = "error." + err.code;
    return state.messages[key] !== undefined ? t(key) : t("error.unknown", { code: err.code || err.status });
  }

  // ---------------------------------------------------------------------------------------------
  // Sign-in

  function takeFragmentToken() {
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get("token");
    if (token) {
      state.bearer = token;
      // Out of the address bar and the history at once.
      history.replaceState(null, "", location.pathname + location.search);
    }
  }

  function showSignIn(forbidden) {
    $("loading").hidden = true;
    $("app").hidden = true;
    $("signin").hidden = false;
    const body = $("signin-body");
    body.dataset.i18n = forbidden ? "signin.forbidden" : "signin.body";
    body.textContent = t(body.dataset.i18n);
  }

  async function start() {
    takeFragmentToken();
    await setLanguage(pickLanguage());
    $("lang").addEventListener("change", () => {
      try {
        localStorage.setItem("scopegate.ui.lang", $("lang").value);
      } catch (e) {
        /* storage may be off */
      }
      setLanguage($("lang").value);
    });
    let session;
    try {
      session = await api("GET", "/ui/session");
    } catch (err) {
      if (err.status === 401 || err.status === 400) return showSignIn(false);
      if (err.status === 403) return showSignIn(true);
      $("loading").textContent = errorText(err);
      return;
    }
    let catalogue = [];
    try {
      catalogue = (await api("GET", "/scopes")).scopes || [];
    } catch (err) {
      catalogue = [];
    }
    const described = new Map(catalogue.map((s) => [s.name, s.description]));
    state.session = session;
    state.scopes = (session.scopes || []).map((s) => ({
      name: s.name,
      description: described.get(s.name) || s.description || "",
    }));
    $("loading").hidden = true;
    $("app").hidden = false;
    wire();
    renderWho();
    renderForm();
    await loadList();
  }

  function renderWho() {
    const s = state.session;
    $("who").textContent = t("who.signed_in", { subject: s.subject || "—", workspace: s.workspace || "—" });
  }

  // ---------------------------------------------------------------------------------------------
  // Create

  function mintable(name) {
    return state.scopes.some((s) => s.name === name);
  }

  function availablePresets() {
    return PRESETS.filter((p) => {
      if (p === "custom") return state.scopes.some((s) => s.name !== "agency");
      return mintable(p);
    });
  }

  function describe(scope) {
    return BUILTIN.includes(scope.name) ? t("scope." + scope.name) : scope.description || scope.name;
  }

  function choice(type, name, value, labelText, hintText, checked) {
    const id = (type === "radio" ? "preset-" : "scope-") + value.replace(/[^A-Za-z0-9_-]/g, "_");
    const wrap = document.createElement("div");
    wrap.className = "choice";
    const input = document.createElement("input");
    input.type = type;
    input.name = name;
    input.value = value;
    input.id = id;
    input.checked = checked;
    const label = document.createElement("label");
    label.htmlFor = id;
    const strong = document.createElement("span");
    strong.className = "choice-label";
    strong.textContent = labelText;
    label.appendChild(strong);
    if (hintText) {
      const hint = document.createElement("span");
      hint.className = "hint";
      hint.textContent = hintText;
      label.appendChild(hint);
    }
    wrap.append(input, label);
    return wrap;
  }

  // `fresh`: after a reset, back to the defaults instead of keeping the current choices.
  function renderForm(fresh) {
    const presets = availablePresets();
    const current = (document.querySelector("input[name=preset]:checked") || {}).value;
    const selected = presets.includes(current) ? current : presets.includes("read") ? "read" : presets[0];
    const box = $("presets");
    box.replaceChildren(
      ...presets.map((p) => choice("radio", "preset", p, t("preset." + p), t("preset." + p + "_hint"), p === selected)),
    );
    const checked = new Set([...document.querySelectorAll("input[name=scope]:checked")].map((i) => i.value));
    $("custom-scopes").replaceChildren(
      ...state.scopes
        .filter((s) => s.name !== "agency")
        .map((s) => choice("checkbox", "scope", s.name, s.name, describe(s), checked.has(s.name))),
    );
    for (const input of box.querySelectorAll("input")) input.addEventListener("change", presetChanged);
    presetChanged();

    const s = state.session;
    const projectLabel = $("project-label");
    projectLabel.dataset.i18n = s.project_required ? "create.project_required" : "create.project_optional";
    projectLabel.textContent = t(projectLabel.dataset.i18n);
    $("project").required = !!s.project_required;

    const expiry = $("expiry");
    const before = fresh ? null : expiry.value;
    const options = [30, 90, 365].filter((n) => n * DAY <= s.max_ttl);
    expiry.replaceChildren(
      ...options.map((n) => new Option(t("expiry.days", { n }), String(n * DAY))),
      new Option(t("expiry.date"), "date"),
    );
    const preferred = options.includes(Math.round(s.default_ttl / DAY)) ? String(Math.round(s.default_ttl / DAY) * DAY) : null;
    expiry.value = [...expiry.options].some((o) => o.value === before)
      ? before
      : preferred || (options.length ? String(options[options.length - 1] * DAY) : "date");
    const date = $("expiry-date");
    date.min = isoDate(new Date(Date.now() + DAY * 1000));
    date.max = isoDate(new Date(Date.now() + s.max_ttl * 1000));
    $("expiry-hint").textContent = t("expiry.max_hint", { date: exactDate(Date.now() + s.max_ttl * 1000) });
    expiryChanged();
  }

  function isoDate(d) {
    const pad = (n) => String(n).padStart(2, "0");
    return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate());
  }

  function presetChanged() {
    const preset = (document.querySelector("input[name=preset]:checked") || {}).value;
    $("custom-scopes").hidden = preset !== "custom";
    $("targets-field").hidden = preset !== "agency";
  }

  function expiryChanged() {
    $("date-field").hidden = $("expiry").value !== "date";
  }

  function setFieldError(field, message) {
    const el = $(field + "-error");
    el.textContent = message || "";
    el.hidden = !message;
    const inputs = { name: ["name"], project: ["project"], targets: ["targets"], expiry: ["expiry", "expiry-date"] };
    for (const input of inputs[field] || []) $(input).setAttribute("aria-invalid", message ? "true" : "false");
  }

  function clearErrors() {
    for (const f of ["name", "scopes", "targets", "project", "expiry"]) setFieldError(f, "");
    $("form-error").hidden = true;
  }

  // The request body, or null after showing every problem next to its field.
  function readForm() {
    const s = state.session;
    const problems = {};
    const name = $("name").value.trim();
    if (!name) problems.name = t("valid.name_required");
    else if (!NAME_RE.test(name)) problems.name = t("valid.name_chars");
    const preset = (document.querySelector("input[name=preset]:checked") || {}).value;
    let scopes = [];
    const body = { name };
    if (preset === "custom") {
      scopes = [...document.querySelectorAll("input[name=scope]:checked")].map((i) => i.value);
      if (!scopes.length) problems.scopes = t("valid.scopes_required");
    } else if (preset) {
      scopes = [preset];
    } else {
      problems.scopes = t("valid.scopes_required");
    }
    body.scopes = scopes;
    if (preset === "agency") {
      const lines = $("targets").value.split("\n").map((l) => l.trim()).filter(Boolean);
      const targets = [];
      for (const line of lines) {
        const at = line.indexOf(":");
        const kind = line.slice(0, at);
        const id = line.slice(at + 1);
        if (at < 1 || !KIND_RE.test(kind) || !ID_RE.test(id)) {
          problems.targets = t("valid.targets_format");
          break;
        }
        targets.push({ kind, id });
      }
      if (!lines.length) problems.targets = t("valid.targets_required");
      body.targets = targets;
    }
    const project = $("project").value.trim();
    if (project) {
      if (!ID_RE.test(project)) problems.project = t("valid.project_chars");
      body.project = project;
    } else if (s.project_required) {
      problems.project = t("valid.project_required");
    }
    const expiry = $("expiry").value;
    if (expiry === "date") {
      const value = $("expiry-date").value;
      const maxDate = $("expiry-date").max;
      if (!value) problems.expiry = t("valid.date_required");
      else if (value < $("expiry-date").min || value > maxDate) {
        problems.expiry = t("valid.date_range", { date: exactDate(Date.now() + s.max_ttl * 1000) });
      } else {
        const [y, m, d] = value.split("-").map(Number);
        const end = new Date(y, m - 1, d, 23, 59, 59).getTime();
        // Never past the server's max_ttl: the last allowed day ends at the limit.
        body.expires_in = Math.min(Math.floor((end - Date.now()) / 1000), s.max_ttl);
      }
    } else {
      body.expires_in = Math.min(Number(expiry), s.max_ttl);
    }
    clearErrors();
    for (const [field, message] of Object.entries(problems)) setFieldError(field, message);
    const first = Object.keys(problems)[0];
    if (first) {
      focusField(first);
      return null;
    }
    return body;
  }

  function focusField(field) {
    const target = {
      name: "name",
      project: "project",
      targets: "targets",
      expiry: $("expiry").value === "date" ? "expiry-date" : "expiry",
    }[field];
    if (target) $(target).focus();
    else (document.querySelector("input[name=preset]:checked") || $("presets")).focus();
  }

  // Which field an API refusal is about: its detail starts with the field name.
  function apiFieldError(err) {
    if (err.code === "conflict") return ["name", t("valid.name_taken")];
    const field = (err.detail.match(/^([a-z_]+):/) || [])[1];
    const map = {
      name: ["name", t("valid.name_chars")],
      scopes: ["scopes", errorText(err)],
      targets: ["targets", t("valid.targets_format")],
      project: ["project", err.code === "invalid_request" ? t("valid.project_chars") : errorText(err)],
      expires_in: ["expiry", t("valid.expiry")],
    };
    return map[field] || null;
  }

  async function submitCreate(event) {
    event.preventDefault();
    const body = readForm();
    if (!body) return;
    const button = $("create");
    button.disabled = true;
    button.textContent = t("create.creating");
    try {
      const created = await api("POST", "/tokens", body);
      $("create-form").reset();
      renderForm(true);
      reveal(created);
      $("list-status").textContent = t("create.done", { name: created.name });
      loadList();
    } catch (err) {
      const hit = apiFieldError(err);
      if (hit) {
        setFieldError(hit[0], hit[1]);
        focusField(hit[0]);
      } else {
        $("form-error").textContent = errorText(err);
        $("form-error").hidden = false;
        if (err.status === 401) showSignIn(false);
      }
    } finally {
      button.disabled = false;
      button.textContent = t("create.submit");
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Reveal once

  function reveal(created) {
    const dialog = $("reveal");
    state.afterReveal = created.id;
    $("copy-status").textContent = "";
    dialog.showModal();
    // Filled after opening, so the live region announces it.
    $("reveal-name").textContent = t("reveal.name", { name: created.name });
    $("secret").textContent = created.token;
    $("copy").focus();
  }

  async function copySecret() {
    const secret = $("secret").textContent;
    try {
      await navigator.clipboard.writeText(secret);
      $("copy-status").textContent = t("reveal.copied");
    } catch (e) {
      const range = document.createRange();
      range.selectNodeContents($("secret"));
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      $("copy-status").textContent = t("reveal.copy_failed");
    }
  }

  function forgetSecret() {
    // However the dialog closes (button, Escape), the secret leaves the page.
    $("secret").textContent = "";
    $("reveal-name").textContent = "";
    $("copy-status").textContent = "";
    const id = state.afterReveal;
    state.afterReveal = null;
    const row = id && document.querySelector('[data-token-id="' + CSS.escape(id) + '"]');
    (row || $("list-h")).focus();
  }

  // ---------------------------------------------------------------------------------------------
  // List

  async function loadList() {
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

  function statusOf(tok) {
    if (tok.revoked_at) return "revoked";
    if (tok.expires_at && Date.parse(tok.expires_at) <= Date.now()) return "expired";
    return "active";
  }

  function exactDate(ms) {
    return new Intl.DateTimeFormat(state.lang, { dateStyle: "long" }).format(new Date(ms));
  }

  function exactTime(ms) {
    return new Intl.DateTimeFormat(state.lang, { dateStyle: "full", timeStyle: "long" }).format(new Date(ms));
  }

  function relative(ms) {
    // "in 1 month", never "next month" (which reads as a calendar month).
    const rtf = new Intl.RelativeTimeFormat(state.lang, { numeric: "always" });
    const secs = Math.round((ms - Date.now()) / 1000);
    const abs = Math.abs(secs);
    if (abs < 10) return new Intl.RelativeTimeFormat(state.lang, { numeric: "auto" }).format(0, "second");
    const units = [
      ["year", 365 * DAY],
      ["month", 30 * DAY],
      ["week", 7 * DAY],
      ["day", DAY],
      ["hour", 3600],
      ["minute", 60],
    ];
    for (const [unit, size] of units) {
      // A little slack, so a 30-day token just minted reads "in 1 month", not "in 4 weeks".
      if (abs >= size * 0.98) return rtf.format(Math.round(secs / size), unit);
    }
    return rtf.format(secs, "second");
  }

  function timeCell(labelKey, iso, cls) {
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

  function badge(text, cls) {
    const b = document.createElement("span");
    b.className = "badge " + cls;
    b.textContent = text;
    return b;
  }

  function renderList() {
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

  // ---------------------------------------------------------------------------------------------
  // Revoke

  function askRevoke(tok, opener) {
    state.pendingRevoke = { tok, opener };
    $("confirm-body").textContent = t("revoke.body", { name: tok.name, prefix: (tok.display_prefix || "") + "…" });
    $("confirm-error").hidden = true;
    $("confirm").showModal();
    $("confirm-cancel").focus();
  }

  async function confirmRevoke() {
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

  function cancelRevoke() {
    const pending = state.pendingRevoke;
    state.pendingRevoke = null;
    if ($("confirm").open) $("confirm").close();
    if (pending && pending.opener.isConnected) pending.opener.focus();
  }

  // ---------------------------------------------------------------------------------------------

  function wire() {
    $("create-form").addEventListener("submit", submitCreate);
    $("expiry").addEventListener("change", expiryChanged);
    $("refresh").addEventListener("click", loadList);
    $("show-revoked").addEventListener("change", loadList);
    $("copy").addEventListener("click", copySecret);
    $("reveal-done").addEventListener("click", () => $("reveal").close());
    $("reveal").addEventListener("close", forgetSecret);
    $("confirm-ok").addEventListener("click", confirmRevoke);
    $("confirm-cancel").addEventListener("click", cancelRevoke);
    $("confirm").addEventListener("cancel", (e) => {
      e.preventDefault();
      cancelRevoke();
    });
    $("name").addEventListener("input", () => setFieldError("name", ""));
    // Relative times age in place (never re-rendering the rows, so focus stays put).
    setInterval(() => {
      for (const time of document.querySelectorAll("#tokens time")) time.textContent = relative(Date.parse(time.dateTime));
    }, 30000);
  }

  document.addEventListener("DOMContentLoaded", start);
})();
