// text/html outputs: in an <iframe sandbox="allow-scripts"> given the HTML as
// srcdoc, never with allow-same-origin, so the frame's origin is opaque: it
// cannot reach the page, its storage or the token. The page's CSP applies
// inside too (a srcdoc frame inherits it), so the output's own scripts do not
// run; only resizer.js, from our origin, does: it posts the content's height
// and the frame takes it. Messages count only from this frame's window.

import { html, useEffect, useMemo, useRef, useState } from "../../vendor/preact.js";

const RESIZER = new URL("./resizer.js", import.meta.url).href;
const MIN_HEIGHT = 16;
const MAX_HEIGHT = 8000; // taller content scrolls inside the frame

// The frame's own styles (an inline <style> is allowed by style-src).
const FRAME_CSS = `html{color-scheme:light dark}body{margin:0;padding:2px 0;font:14px/1.4 system-ui,sans-serif;
background:transparent;overflow-wrap:anywhere}table{border-collapse:collapse}th,td{padding:2px 8px;
border-bottom:1px solid rgba(128,128,128,.3);text-align:right}img,svg{max-width:100%}`;

export function frameDocument(body) {
  return `<!doctype html><html><head><meta charset="utf-8"><style>${FRAME_CSS}</style>`
    + `<script src="${RESIZER}" defer></script></head><body>${body}</body></html>`;
}

export function HtmlFrame({ source }) {
  const ref = useRef(null);
  const [height, setHeight] = useState(null);
  const srcdoc = useMemo(() => frameDocument(source), [source]);
  useEffect(() => {
    const onMessage = (event) => {
      const frame = ref.current;
      if (!frame || event.source !== frame.contentWindow) return;
      const value = event.data && event.data.spinFrameHeight;
      if (typeof value !== "number" || !Number.isFinite(value)) return;
      setHeight(Math.min(MAX_HEIGHT, Math.max(MIN_HEIGHT, Math.ceil(value))));
    };
    window.addEventListener("message", onMessage);
    return () => window.removeEventListener("message", onMessage);
  }, []);
  return html`<iframe ref=${ref} class="output-html" sandbox="allow-scripts" srcdoc=${srcdoc}
    title="HTML output" referrerpolicy="no-referrer"
    style=${height === null ? undefined : { height: `${height}px` }}></iframe>`;
}
