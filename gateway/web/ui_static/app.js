// scopegate's token page (plain JavaScript modules, no build step, no third-party code).
// It talks only to the management API under the mount this page is served from.

import { $, api, errorText, pickLanguage, relative, showSignIn, state, t } from "./common.js";
import { copySecret, expiryChanged, forgetSecret, renderForm, setFieldError, submitCreate } from "./create.js";
import { cancelRevoke, cancelRotate, confirmRevoke, confirmRotate, loadList, renderList } from "./list.js";

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
  state.sessionAt = Date.now();
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
  $("rotate-ok").addEventListener("click", confirmRotate);
  $("rotate-cancel").addEventListener("click", cancelRotate);
  $("rotate").addEventListener("cancel", (e) => {
    e.preventDefault();
    cancelRotate();
  });
  $("cidrs").addEventListener("input", () => setFieldError("cidrs", ""));
  $("name").addEventListener("input", () => setFieldError("name", ""));
  // Relative times age in place (never re-rendering the rows, so focus stays put).
  setInterval(() => {
    for (const time of document.querySelectorAll("#tokens time")) time.textContent = relative(Date.parse(time.dateTime));
  }, 30000);
}

start();
