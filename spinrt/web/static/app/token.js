// Where the page keeps its token (PROTOCOL.md section 8).
//
// The token arrives in the URL fragment (`#token=...`, which browsers never
// send to a server) or through the login form. It is kept in sessionStorage
// (this tab only, gone when the tab closes) and removed from the address bar
// at once, so it stays out of history, bookmarks and screenshots. It never
// goes into the DOM, a query string or a cookie: client.js presents it as the
// `spin.token.*` WebSocket subprotocol or an Authorization header.

const KEY = "spin.token";
let memory = null; // when sessionStorage is unavailable (disabled storage)

function decode(text) {
  try {
    return decodeURIComponent(text);
  } catch {
    return text; // a stray "%": keep it as typed
  }
}

/** "#session=s1&token=t" -> [["session", "s1"], ["token", "t"]], in order.
 * Percent-decoded; "+" stays "+" (a fragment is not a form body). */
export function parseFragment(hash) {
  const text = hash.startsWith("#") ? hash.slice(1) : hash;
  if (!text) return [];
  return text.split("&").filter(Boolean).map((part) => {
    const at = part.indexOf("=");
    return at < 0 ? [decode(part), ""] : [decode(part.slice(0, at)), decode(part.slice(at + 1))];
  });
}

/** The inverse of parseFragment: "" for no pairs, else "#k=v&...". */
export function formatFragment(pairs) {
  if (!pairs.length) return "";
  return "#" + pairs.map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).join("&");
}

/** The value of `name` in the current fragment, or null. */
export function fragmentValue(name, hash = window.location.hash) {
  const found = parseFragment(hash).filter(([k]) => k === name);
  return found.length ? found[found.length - 1][1] : null;
}

/** Moves a `token` from the fragment into storage and rewrites the address
 * bar without it (history.replaceState: no new history entry, no reload);
 * the other parts (`session=...`) stay. Returns whether a token was found. */
export function takeTokenFromFragment(loc = window.location, hist = window.history) {
  const pairs = parseFragment(loc.hash);
  const tokens = pairs.filter(([k]) => k === "token");
  if (!tokens.length) return false;
  const rest = pairs.filter(([k]) => k !== "token");
  hist.replaceState(hist.state, "", loc.pathname + loc.search + formatFragment(rest));
  const token = tokens[tokens.length - 1][1];
  if (token) setToken(token);
  return Boolean(token);
}

export function getToken() {
  try {
    return window.sessionStorage.getItem(KEY) || memory;
  } catch {
    return memory;
  }
}

export function setToken(token) {
  memory = token;
  try {
    window.sessionStorage.setItem(KEY, token);
    memory = null;
  } catch {
    // storage disabled: this page keeps it in memory until it is closed
  }
}

export function clearToken() {
  memory = null;
  try {
    window.sessionStorage.removeItem(KEY);
  } catch {
    // nothing stored
  }
}
