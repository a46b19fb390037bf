// A run's output (model.js) on the page:
//
//   html`<${OutputView} output=${out} session=${id} run=${runId} token=${token} />`
//
// renders one <div data-output> (the automation contract, docs/browser-ui.rst)
// and follows the model at most once per animation frame, however fast its
// events come. Stream text is one <div class="ln"> per line, updated in place
// (ansi.js); hidden output shows "N lines hidden" with "show more" and
// "download full output", both read from GET /api/sessions/<id>/runs/<run>/output
// with the token in a header.

import { html, useEffect, useLayoutEffect, useMemo, useRef, useState } from "../../vendor/preact.js";
import { attachmentName, fetchRunOutput } from "../client.js";
import { syncTerminal, textHtml } from "./ansi.js";
import { MimeBundle } from "./mime.js";

const FORMAT = new Intl.NumberFormat("en");

export function formatBytes(bytes) {
  if (bytes < 1024) return `${FORMAT.format(bytes)} byte${bytes === 1 ? "" : "s"}`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function plural(n, word) {
  return `${FORMAT.format(n)} ${word}${n === 1 ? "" : "s"}`;
}

/** "1,234 lines (5.2 MiB) hidden", or what is known of it. */
export function describeGap(gap) {
  const parts = [];
  if (gap.linesKnown && gap.lines) parts.push(plural(gap.lines, "line"));
  if (gap.outputs) parts.push(plural(gap.outputs, "other output"));
  const bytes = formatBytes(gap.bytes);
  return `${parts.length ? `${parts.join(" and ")} (${bytes})` : bytes} hidden`;
}

function StreamItem({ entry }) {
  const ref = useRef(null);
  const state = useRef({});
  useLayoutEffect(() => {
    syncTerminal(ref.current, entry.term, state.current);
  });
  return html`<div ref=${ref} class=${entry.continued ? "output-stream continued" : "output-stream"}
    data-output-stream></div>`;
}

function ErrorItem({ error }) {
  const traceback = Array.isArray(error.traceback) ? error.traceback.filter((t) => typeof t === "string") : [];
  const summary = [error.ename, error.evalue ?? error.message].filter((s) => typeof s === "string" && s).join(": ");
  const rendered = useMemo(() => textHtml(traceback.length ? traceback.join("\n") : summary || "error"), [error]);
  return html`<div class="output-error" data-output-error>
    <pre class="output-text" dangerouslySetInnerHTML=${{ __html: rendered }}></pre>
    ${typeof error.code === "string" && error.code && html`<span class="output-error-code">${error.code}</span>`}
    ${error.truncated === true && html`<div class="output-note">This error was cut to fit the snapshot.</div>`}
  </div>`;
}

function BundleItem({ entry }) {
  if (entry.data === null) {
    return html`<div class="output-note" data-output-cut>A display of ${formatBytes(entry.cutBytes || 0)} is too large
      to show here.</div>`;
  }
  return html`<div class=${`output-${entry.kind}`}>
    <${MimeBundle} data=${entry.data} metadata=${entry.metadata} />
    ${entry.variable && html`<div class="output-note">saved as <code>${entry.variable}</code></div>`}
  </div>`;
}

async function* textChunks(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      if (value) yield value;
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

/** "N lines hidden — show more · download full output". */
function Hidden({ text, output, session, run, token }) {
  const [busy, setBusy] = useState(null);
  const [error, setError] = useState(null);
  const reachable = Boolean(session && run && token);

  async function more() {
    setBusy("more");
    setError(null);
    try {
      const response = await fetchRunOutput(token, session, run, { stream: output.streamFilter });
      if (!(await output.expand(textChunks(response)))) setError("The output changed meanwhile: try again.");
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(null);
    }
  }

  async function download() {
    setBusy("download");
    setError(null);
    try {
      const response = await fetchRunOutput(token, session, run);
      const blob = await response.blob();
      const url = URL.createObjectURL(blob);
      const link = document.createElement("a");
      link.href = url;
      link.download = attachmentName(response.headers.get("content-disposition")) || `${session}-${run}.txt`;
      link.hidden = true;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (e) {
      setError(e.message);
    } finally {
      setBusy(null);
    }
  }

  const expandable = output.canExpand;
  return html`<div class="output-hidden" data-output-hidden>
    <span class="output-hidden-text">⋯ ${text}</span>
    ${reachable && expandable && html`<button type="button" class="link" data-action="show-more"
      disabled=${busy !== null} onClick=${more}>${busy === "more" ? "loading…" : "show more"}</button>`}
    ${reachable && !expandable && output.running && html`<span class="muted">(show more once the run has finished)</span>`}
    ${reachable && html`<button type="button" class="link" data-action="download"
      disabled=${busy !== null} onClick=${download}>${busy === "download" ? "downloading…" : "download full output"}</button>`}
    ${error && html`<span class="error" role="alert">${error}</span>`}
  </div>`;
}

function Item({ entry, ...context }) {
  switch (entry.kind) {
    case "stream":
      return html`<${StreamItem} entry=${entry} />`;
    case "gap":
      return html`<${Hidden} text=${describeGap(entry)} ...${context} />`;
    case "error":
      return html`<${ErrorItem} error=${entry.error} />`;
    default:
      return html`<${BundleItem} entry=${entry} />`;
  }
}

/** Items that did not change keep their vnode, so Preact skips them. */
function useItemVnodes(items, context) {
  const cache = useRef(new Map());
  const next = new Map();
  const vnodes = items.map((entry) => {
    const old = cache.current.get(entry.id);
    const fresh = entry.kind === "stream" || entry.kind === "gap" || !old || old.ver !== entry.ver || old.context !== context;
    const vnode = fresh ? html`<${Item} key=${entry.id} entry=${entry} ...${context} />` : old.vnode;
    next.set(entry.id, { ver: entry.ver, vnode, context });
    return vnode;
  });
  cache.current = next;
  return vnodes;
}

export function OutputView({ output, session = null, run = null, token = null }) {
  const [, setTick] = useState(0);
  const rendered = useRef(-1);
  rendered.current = output.version;
  useEffect(() => {
    let frame = 0;
    const schedule = () => {
      if (!frame) frame = requestAnimationFrame(() => {
        frame = 0;
        setTick((t) => t + 1);
      });
    };
    const stop = output.subscribe(schedule);
    if (rendered.current !== output.version) schedule(); // changed before we listened
    return () => {
      stop();
      if (frame) cancelAnimationFrame(frame);
    };
  }, [output]);
  const context = useMemo(() => ({ output, session, run, token }), [output, session, run, token]);
  const vnodes = useItemVnodes(output.items(), context);
  const hidden = output.hiddenBytes;
  return html`<div class="output" data-output>
    ${vnodes}
    ${hidden > 0 && html`<${Hidden} text=${`${formatBytes(hidden)} of this output hidden`} ...${context} />`}
  </div>`;
}
