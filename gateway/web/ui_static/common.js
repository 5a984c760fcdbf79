// scopegate's token page (plain JavaScript modules, no build step, no third-party code).
// What every part shares: constants, state, messages, times, and the management API.

export const LANGS = ["en", "es", "fr", "de", "pt"];
export const NAME_RE = /^[A-Za-z0-9 _.-]{1,100}$/;
export const ID_RE = /^[A-Za-z0-9._:@-]{1,128}$/;
export const KIND_RE = /^[a-z][a-z0-9_-]{0,39}$/;
export const DAY = 86400;
export const PRESETS = ["read", "write", "full", "custom", "agency"];
export const BUILTIN = ["read", "write", "full", "agency", "tokens:manage"];
// The page lives at <mount>/ui/: the management API is <mount>.
export const MOUNT = location.pathname.replace(/\/ui(\/.*)?$/, "");

export const state = {
  lang: "en",
  messages: {},
  bearer: null, // a JWT handed over in the URL fragment, kept in memory only
  session: null,
  sessionAt: 0, // when the session was read: a token manager's max_ttl counts down from then
  scopes: [], // [{name, description}] the signed-in user may mint
  tokens: [],
  pendingRevoke: null,
  pendingRotate: null,
  afterReveal: null,
};

export const $ = (id) => document.getElementById(id);

// Languages

export function t(key, vars) {
  let text = state.messages[key];
  if (text === undefined) text = key;
  if (vars) {
    for (const [k, v] of Object.entries(vars)) text = text.split("{" + k + "}").join(String(v));
  }
  return text;
}

export function pickLanguage() {
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

export function exactDate(ms) {
  return new Intl.DateTimeFormat(state.lang, { dateStyle: "long" }).format(new Date(ms));
}

export function exactTime(ms) {
  return new Intl.DateTimeFormat(state.lang, { dateStyle: "full", timeStyle: "long" }).format(new Date(ms));
}

export function relative(ms) {
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

// The management API

export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail || code);
    this.status = status;
    this.code = code;
    this.detail = detail || "";
  }
}

export async function api(method, path, body) {
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

export function errorText(err) {
  const key = "error." + err.code;
  return state.messages[key] !== undefined ? t(key) : t("error.unknown", { code: err.code || err.status });
}

export function showSignIn(forbidden) {
  $("loading").hidden = true;
  $("app").hidden = true;
  $("signin").hidden = false;
  const body = $("signin-body");
  body.dataset.i18n = forbidden ? "signin.forbidden" : "signin.body";
  body.textContent = t(body.dataset.i18n);
}
