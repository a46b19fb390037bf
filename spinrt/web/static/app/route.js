// The page's own views besides the home and notebook views, named by the
// address: #audit (the audit trail) and #tokens (named tokens), both the
// owner's. A session (#session=<id>) is store.js's; this is the rest.
//
//   route   a signal: "audit", "tokens" or null (the home or notebook view)
//   go(name)  sets the address to #<name> (a new history entry)

import { signal } from "../vendor/preact.js";
import { parseFragment } from "./token.js";

export const VIEWS = ["audit", "tokens"];

/** The view the fragment names ("#audit", "#tokens&..."), or null. */
export function routeOf(hash) {
  const keys = parseFragment(hash).map(([key]) => key);
  if (keys.includes("session")) return null; // a session's own address wins
  return VIEWS.find((view) => keys.includes(view)) || null;
}

export const route = signal(routeOf(window.location.hash));

window.addEventListener("hashchange", () => {
  route.value = routeOf(window.location.hash);
});

export function go(name) {
  window.location.hash = name ? "#" + name : "#";
}
