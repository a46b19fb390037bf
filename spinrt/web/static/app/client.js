// The protocol client: the only module that talks to the runtime
// (docs/protocol.rst; PROTOCOL.md sections 2, 3 and 8).
//
// One WebSocket on /ws, opened with the subprotocols `spin.v1` and
// `spin.token.<base64url(token)>`. request() sends `{id, op, ...params}` and
// resolves with the reply (rejects with a ProtocolError when `ok` is false).
// Events are dispatched as DOM events on the client:
//   "state"   detail: "connecting" | "open" | "reconnecting" | "unauthorized" | "closed"
//   "open"    detail: the runtime from `hello` (after every (re)connect)
//   "message" detail: every server event (`welcome`, `presence`, session events)
//   "detached" detail: {session, error}, a session that could not be attached again
// A dropped connection is reopened with a growing delay; the sessions
// attached with attach() are attached again with `since` = the last seq
// seen, so no event is lost or seen twice. A wrong token ends it: state
// "unauthorized"; so does close code 4401 (the token was revoked or
// expired meanwhile: PROTOCOL.md section 9), whose reason is kept in
// `refusal` ("token revoked").

export class ProtocolError extends Error {
  constructor(code, message, details = {}) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
    this.details = details;
  }
}

/** The /ws URL next to the page: http -> ws, https -> wss, same host and path prefix. */
export function wsUrl(pageUrl = window.location.href) {
  const url = new URL("ws", pageUrl);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.search = "";
  url.hash = "";
  return url.href;
}

/** `spin.token.` + base64url of the token's UTF-8 bytes, without padding. */
export function tokenSubprotocol(token) {
  let binary = "";
  for (const byte of new TextEncoder().encode(token)) binary += String.fromCharCode(byte);
  return "spin.token." + btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** GET `path` (relative to the page) with the token in the Authorization
 * header; resolves with the Response when it is 2xx. Rejects with
 * ProtocolError "unauthorized" (401), "throttled" (429, with
 * details.retryAfter in seconds), the route's own error code with its
 * message (a JSON `{error: {code, message}}` body, e.g. "not_found"),
 * "http_error" or "unreachable". */
async function apiGet(token, path, pageUrl) {
  let response;
  try {
    response = await fetch(new URL(path, pageUrl), {
      headers: { Authorization: `Bearer ${token}` },
      cache: "no-store",
      credentials: "omit",
    });
  } catch (error) {
    // a token with characters a header cannot carry fails here too
    throw new ProtocolError("unreachable", `The runtime cannot be reached (${error.message}).`);
  }
  if (response.status === 401) throw new ProtocolError("unauthorized", "The runtime refused this token.");
  if (response.status === 429) {
    const retryAfter = Number(response.headers.get("retry-after")) || 1;
    throw new ProtocolError("throttled", `Too many failed attempts: wait ${retryAfter} s.`, { retryAfter });
  }
  if (!response.ok) {
    let error = null;
    try {
      error = (await response.json()).error;
    } catch {
      // not the runtime's JSON error
    }
    if (error && typeof error.code === "string" && typeof error.message === "string") {
      throw new ProtocolError(error.code, error.message, { status: response.status });
    }
    throw new ProtocolError("http_error", `The runtime answered ${response.status}.`, { status: response.status });
  }
  return response;
}

/** GET api/status (errors as apiGet's). */
export async function fetchStatus(token, pageUrl = window.location.href) {
  return (await apiGet(token, "api/status", pageUrl)).json();
}

/** GET api/audit (docs/protocol.rst "Audit trail"; owner only): one page of
 * the audit trail, oldest first. `since`, `until`: ISO 8601 times (since <=
 * ts < until); `limit`: rows per page (1 to 10000); `cursor`: the previous
 * page's last `id`. Resolves with the rows, `{id, ts, identity, role, token,
 * client, action, target, outcome}` each (fewer than `limit`: the last
 * page). Errors as apiGet's ("forbidden" for another role, "bad_request"
 * naming the parameter), or "bad_response" for a line that is not JSON. */
export async function fetchAudit(token, { since = null, until = null, limit = null, cursor = null } = {},
  pageUrl = window.location.href) {
  const query = new URLSearchParams();
  if (since) query.set("since", since);
  if (until) query.set("until", until);
  if (limit !== null) query.set("limit", String(limit));
  if (cursor !== null) query.set("cursor", String(cursor));
  const text = await (await apiGet(token, `api/audit?${query}`, pageUrl)).text();
  return text.split("\n").filter((line) => line.trim()).map((line, n) => {
    try {
      return JSON.parse(line);
    } catch {
      throw new ProtocolError("bad_response", `The audit trail's line ${n + 1} is not JSON.`);
    }
  });
}

/** The file name in a Content-Disposition header (filename* first, RFC 6266), or null. */
export function attachmentName(header) {
  if (!header) return null;
  const extended = /filename\*\s*=\s*UTF-8''([^;\s]+)/i.exec(header);
  if (extended) {
    try {
      return decodeURIComponent(extended[1]);
    } catch {
      // malformed: the plain name below
    }
  }
  const plain = /filename\s*=\s*"([^"]*)"/i.exec(header);
  return plain ? plain[1] : null;
}

/** GET api/sessions/<id>/notebook.ipynb (docs/protocol.rst "Session
 * notebook"): the session's document with its outputs as nbformat 4.
 * Resolves with {blob, filename} (the runtime's file name for it); errors
 * as apiGet's ("not_found" for an unknown session). */
export async function fetchSessionNotebook(token, session, pageUrl = window.location.href) {
  const response = await apiGet(token, `api/sessions/${encodeURIComponent(session)}/notebook.ipynb`, pageUrl);
  const filename = attachmentName(response.headers.get("content-disposition"));
  return { blob: await response.blob(), filename };
}

/** GET api/sessions/<id>/runs/<run>/output (docs/protocol.rst "Run output"):
 * one run's full stream text, stdout and stderr as they came, or only
 * `stream` ("stdout" / "stderr"). Resolves with the Response, its body not
 * read yet (it can be 100 MB: stream it or take it as a Blob); errors as
 * apiGet's ("not_found" for an unknown session or run). */
export async function fetchRunOutput(token, session, run, { stream = null, pageUrl = window.location.href } = {}) {
  let path = `api/sessions/${encodeURIComponent(session)}/runs/${encodeURIComponent(run)}/output`;
  if (stream) path += `?stream=${encodeURIComponent(stream)}`;
  return apiGet(token, path, pageUrl);
}

const REQUEST_TIMEOUT_MS = 30000;
const PING_EVERY_MS = 25000; // browsers cannot see WebSocket pings: ask with the `ping` op
const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];

export class SpinClient extends EventTarget {
  constructor(token, { url = wsUrl(), pageUrl = window.location.href } = {}) {
    super();
    this.token = token;
    this.url = url;
    this.pageUrl = pageUrl;
    this.state = "closed";
    this.runtime = null;
    this.ws = null;
    this.pending = new Map(); // request id -> {resolve, reject, timer}
    this.attached = new Map(); // session id -> last seq seen
    this.nextId = 0;
    this.failures = 0; // connection attempts in a row that did not open
    this.retryTimer = null;
    this.pingTimer = null;
    this.refusal = null; // the reason of a 4401 close
    this.onOnline = () => this.state === "reconnecting" && this.reconnectNow();
  }

  connect() {
    window.addEventListener("online", this.onOnline);
    this.open(this.runtime ? "reconnecting" : "connecting");
  }

  close() {
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.retryTimer);
    this.setState("closed");
    if (this.ws) this.ws.close(1000);
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  open(state) {
    this.setState(state);
    let ws;
    try {
      ws = new WebSocket(this.url, ["spin.v1", tokenSubprotocol(this.token)]);
    } catch (error) {
      this.dropped(null);
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      if (ws.protocol !== "spin.v1") {
        ws.close(1002);
        return;
      }
      this.ready(ws);
    };
    ws.onmessage = (message) => this.receive(message.data);
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      if (event.code === 4401) {
        // revoked or expired: trying again cannot help
        this.refusal = event.reason || "token refused";
        clearTimeout(this.retryTimer);
        this.setState("unauthorized");
      }
      this.dropped(opened ? ws : null);
    };
  }

  async ready(ws) {
    this.failures = 0;
    this.pingTimer = setInterval(() => this.keepAlive(ws), PING_EVERY_MS);
    try {
      this.runtime = (await this.request("hello")).runtime;
      for (const [session, since] of [...this.attached]) {
        try {
          await this.request("session.attach", { session, since });
        } catch (error) {
          if (error.code === "disconnected" || error.code === "timeout") throw error;
          this.attached.delete(session); // closed for good or deleted meanwhile
          this.dispatchEvent(new CustomEvent("detached", { detail: { session, error } }));
        }
      }
    } catch (error) {
      if (this.ws === ws) ws.close(4000); // start over with a fresh connection
      return;
    }
    if (this.ws !== ws) return;
    this.setState("open");
    this.dispatchEvent(new CustomEvent("open", { detail: this.runtime }));
  }

  async keepAlive(ws) {
    try {
      await this.request("ping", {}, 10000);
    } catch (error) {
      if (error.code === "timeout" && this.ws === ws) ws.close(4000); // a silent network: start over
    }
  }

  dropped(ws) {
    clearInterval(this.pingTimer);
    this.ws = null;
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(new ProtocolError("disconnected", "The connection to the runtime was lost."));
    }
    this.pending.clear();
    if (this.state === "closed" || this.state === "unauthorized") return;
    if (!ws) this.failures += 1;
    this.setState("reconnecting");
    if (this.failures > 0) {
      this.checkToken(); // a refused upgrade looks like any other failure from here
    }
    const delay = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.open("reconnecting"), delay * (0.75 + Math.random() / 2));
  }

  async checkToken() {
    try {
      await fetchStatus(this.token, this.pageUrl);
    } catch (error) {
      if (this.state !== "reconnecting") return;
      if (error.code === "unauthorized") {
        clearTimeout(this.retryTimer);
        this.setState("unauthorized");
      } else if (error.code === "throttled") {
        clearTimeout(this.retryTimer); // wait as long as the runtime asks
        this.retryTimer = setTimeout(() => this.open("reconnecting"), error.details.retryAfter * 1000);
      }
    }
  }

  reconnectNow() {
    clearTimeout(this.retryTimer);
    if (!this.ws) this.open("reconnecting");
  }

  receive(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return; // the runtime sends JSON only; ignore anything else
    }
    if (message === null || typeof message !== "object") return;
    if ("re" in message) {
      const waiting = this.pending.get(message.re);
      if (!waiting) return;
      this.pending.delete(message.re);
      clearTimeout(waiting.timer);
      if (message.ok) {
        waiting.resolve(message);
      } else {
        const { code = "error", message: text = "request failed", ...details } = message.error || {};
        waiting.reject(new ProtocolError(code, text, details));
      }
      return;
    }
    if (typeof message.event !== "string") return;
    if (typeof message.session === "string" && typeof message.seq === "number") {
      const last = this.attached.get(message.session);
      if (last !== undefined) {
        if (message.seq <= last) return; // seen before the reconnect
        this.attached.set(message.session, message.seq);
      }
    }
    this.dispatchEvent(new CustomEvent("message", { detail: message }));
  }

  /** Sends `{id, op, ...params}`; resolves with the reply, rejects with a
   * ProtocolError (the reply's error, "disconnected" or "timeout"). */
  request(op, params = {}, timeoutMs = REQUEST_TIMEOUT_MS) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new ProtocolError("disconnected", "Not connected to the runtime."));
    }
    const id = `c${++this.nextId}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ProtocolError("timeout", `No reply to ${op} in ${timeoutMs / 1000} s.`));
      }, timeoutMs);
      this.pending.set(id, { resolve, reject, timer });
      ws.send(JSON.stringify({ ...params, id, op }));
    });
  }

  /** Attaches to a session and keeps it attached across reconnects; events
   * with seq > `since` arrive as "message" events. Resolves with the reply. */
  async attach(session, since = 0) {
    const last = this.attached.get(session);
    const from = last === undefined ? since : last;
    this.attached.set(session, from);
    try {
      return await this.request("session.attach", { session, since: from });
    } catch (error) {
      if (error.code !== "disconnected") this.attached.delete(session);
      throw error;
    }
  }

  async detach(session) {
    if (!this.attached.delete(session)) return;
    try {
      await this.request("session.detach", { session });
    } catch {
      // gone with the connection anyway
    }
  }

  lastSeq(session) {
    return this.attached.get(session);
  }
}
