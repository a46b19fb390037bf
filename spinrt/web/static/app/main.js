// Start-up: take the token from the address (or ask for one) and show the
// app. See token.js for where the token lives.

import { effect, html, render } from "../vendor/preact.js";
import { createStore } from "./store.js";
import { clearToken, getToken, setToken, takeTokenFromFragment } from "./token.js";
import { App } from "./views/app.js";
import { Login } from "./views/login.js";

const root = document.getElementById("app");
let store = null;
let stopWatching = () => {};

function stop() {
  stopWatching();
  if (store) store.stop();
  store = null;
}

function showLogin(error = null) {
  render(html`<${Login} error=${error} onSubmit=${start} />`, root);
}

function forget() {
  stop();
  clearToken();
  showLogin();
}

/** Opens the app with this token. A refused token brings the form back
 * (the client finds out on its first connection: state "unauthorized"). */
function start(token) {
  stop();
  setToken(token);
  store = createStore(token);
  render(html`<${App} store=${store} onForget=${forget} />`, root);
  const current = store;
  stopWatching = effect(() => {
    if (current.connection.value === "unauthorized") {
      const why = current.client.refusal; // "token revoked", "token expired"
      stop();
      clearToken();
      showLogin(why ? `The runtime refused this token (${why}).` : "The runtime refused this token.");
    } else if (current.sessions.value !== null && document.documentElement.dataset.ui !== "ready") {
      document.documentElement.dataset.ui = "ready"; // tests and the bench wait for this
      performance.mark("spin-ready");
    }
  });
}

function boot() {
  takeTokenFromFragment();
  const token = getToken();
  if (token) start(token);
  else showLogin();
}

// A pasted link with another token, in an open tab.
window.addEventListener("hashchange", () => {
  if (takeTokenFromFragment()) boot();
});
boot();
