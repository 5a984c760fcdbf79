// scopegate's token page (plain JavaScript modules, no build step, no third-party code).
// Create a token, and reveal its secret once.

import { $, BUILTIN, DAY, ID_RE, KIND_RE, NAME_RE, PRESETS, api, errorText, exactDate, showSignIn, state, t } from "./common.js";
import { loadList } from "./list.js";

export function mintable(name) {
  return state.scopes.some((s) => s.name === name);
}

export function availablePresets() {
  return PRESETS.filter((p) => {
    if (p === "custom") return state.scopes.some((s) => s.name !== "agency");
    return mintable(p);
  });
}

export function describe(scope) {
  return BUILTIN.includes(scope.name) ? t("scope." + scope.name) : scope.description || scope.name;
}

export function choice(type, name, value, labelText, hintText, checked) {
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
export function renderForm(fresh) {
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
  const options = [30, 90, 365].filter((n) => n * DAY <= maxTtl());
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
  date.max = isoDate(new Date(Date.now() + maxTtl() * 1000));
  $("notbefore").min = isoDate(new Date());
  $("notbefore").max = date.max;
  $("expiry-hint").textContent = t("expiry.max_hint", { date: exactDate(Date.now() + maxTtl() * 1000) });
  expiryChanged();
}

// The longest expires_in the server accepts now. A token manager's bound is the rest of its
// own life, which shrinks while the page is open (less a minute for the round trip).
export function maxTtl() {
  const s = state.session;
  if (s.kind !== "token") return s.max_ttl;
  const elapsed = Math.ceil((Date.now() - state.sessionAt) / 1000);
  return Math.max(0, s.max_ttl - elapsed - 60);
}

export function isoDate(d) {
  const pad = (n) => String(n).padStart(2, "0");
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate());
}

export function presetChanged() {
  const preset = (document.querySelector("input[name=preset]:checked") || {}).value;
  $("custom-scopes").hidden = preset !== "custom";
  $("targets-field").hidden = preset !== "agency";
}

export function expiryChanged() {
  $("date-field").hidden = $("expiry").value !== "date";
}

export function setFieldError(field, message) {
  const el = $(field + "-error");
  el.textContent = message || "";
  el.hidden = !message;
  const inputs = {
    name: ["name"],
    project: ["project"],
    targets: ["targets"],
    expiry: ["expiry", "expiry-date"],
    cidrs: ["cidrs"],
    notbefore: ["notbefore"],
  };
  for (const input of inputs[field] || []) $(input).setAttribute("aria-invalid", message ? "true" : "false");
}

export function clearErrors() {
  for (const f of ["name", "scopes", "targets", "project", "expiry", "cidrs", "notbefore"]) setFieldError(f, "");
  $("form-error").hidden = true;
}

// The request body, or null after showing every problem next to its field.
export function readForm() {
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
      problems.expiry = t("valid.date_range", { date: exactDate(Date.now() + maxTtl() * 1000) });
    } else {
      const [y, m, d] = value.split("-").map(Number);
      const end = new Date(y, m - 1, d, 23, 59, 59).getTime();
      // Never past the server's max_ttl: the last allowed day ends at the limit.
      body.expires_in = Math.min(Math.floor((end - Date.now()) / 1000), maxTtl());
    }
  } else {
    body.expires_in = Math.min(Number(expiry), maxTtl());
  }
  // Networks are checked by the API (one parser for IPv4 and IPv6); its refusal lands next to the field.
  const cidrs = $("cidrs").value.split(/[\s,]+/).filter(Boolean);
  if (cidrs.length) body.allowed_cidrs = cidrs;
  const notBefore = $("notbefore").value;
  if (notBefore) {
    const [y, m, d] = notBefore.split("-").map(Number);
    const start = new Date(y, m - 1, d);
    if (!y || Number.isNaN(start.getTime())) problems.notbefore = t("valid.not_before");
    // The start of that day, local time, as RFC 3339 in UTC (whole seconds).
    else body.not_before = start.toISOString().replace(/\.\d{3}Z$/, "Z");
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

export function focusField(field) {
  const target = {
    name: "name",
    project: "project",
    targets: "targets",
    expiry: $("expiry").value === "date" ? "expiry-date" : "expiry",
    cidrs: "cidrs",
    notbefore: "notbefore",
  }[field];
  if (target) $(target).focus();
  else (document.querySelector("input[name=preset]:checked") || $("presets")).focus();
}

// Which field an API refusal is about: its detail starts with the field name.
export function apiFieldError(err) {
  if (err.code === "conflict") return ["name", t("valid.name_taken")];
  const field = (err.detail.match(/^([a-z_]+)(?:\[\d+\])?:/) || [])[1];
  const map = {
    name: ["name", t("valid.name_chars")],
    scopes: ["scopes", errorText(err)],
    targets: ["targets", t("valid.targets_format")],
    project: ["project", err.code === "invalid_request" ? t("valid.project_chars") : errorText(err)],
    expires_in: ["expiry", t("valid.expiry")],
    allowed_cidrs: ["cidrs", cidrError(err.detail)],
    not_before: ["notbefore", t("valid.not_before")],
  };
  return map[field] || null;
}

// The API names the entry it refused (`allowed_cidrs[1]: ...`): name it back, in the page's language.
export function cidrError(detail) {
  const at = (detail.match(/^allowed_cidrs\[(\d+)\]/) || [])[1];
  const entries = $("cidrs").value.split(/[\s,]+/).filter(Boolean);
  if (at !== undefined && entries[Number(at)] !== undefined) return t("valid.cidr_bad", { cidr: entries[Number(at)] });
  return t("valid.cidrs");
}

export async function submitCreate(event) {
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

// Reveal once

export function reveal(created) {
  const dialog = $("reveal");
  state.afterReveal = created.id;
  $("copy-status").textContent = "";
  dialog.showModal();
  // Filled after opening, so the live region announces it.
  $("reveal-name").textContent = t("reveal.name", { name: created.name });
  $("secret").textContent = created.token;
  $("copy").focus();
}

export async function copySecret() {
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

export function forgetSecret() {
  // However the dialog closes (button, Escape), the secret leaves the page.
  $("secret").textContent = "";
  $("reveal-name").textContent = "";
  $("copy-status").textContent = "";
  const id = state.afterReveal;
  state.afterReveal = null;
  const row = id && document.querySelector('[data-token-id="' + CSS.escape(id) + '"]');
  (row || $("list-h")).focus();
}
