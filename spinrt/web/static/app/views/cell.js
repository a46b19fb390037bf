// One cell of the notebook: its bar (type, output variable, run state,
// actions), its options, its editor (or, for markdown not being edited, the
// rendered text), a conflict with a teammate's edit when there is one, and
// its latest run's output.
//
// Automation contract (docs/browser-ui.rst): exactly one element per cell
// with data-cell-id and data-run-status; the output is inside [data-output];
// the editor is CodeMirror's .cm-content.

import { html, useEffect, useLayoutEffect, useRef, useState } from "../../vendor/preact.js";
import { createEditor } from "../editor.js";
import { markdownToHtml } from "../markdown.js";
import { OutputView } from "../output/view.js";
import { inTurn } from "../tasks.js";
import { CellOptions } from "./cell_options.js";

const STATUS_LABELS = {
  idle: "",
  queued: "Queued",
  running: "Running",
  ok: "Done",
  error: "Failed",
  cancelled: "Cancelled",
  timeout: "Timed out",
  skipped: "Skipped",
};

/** "850 ms", "12.3 s", "4 min 05 s". */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return "";
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
}

function RunState({ run }) {
  const status = run ? run.status : "idle";
  const [, tick] = useState(0);
  useEffect(() => {
    if (status !== "running") return undefined;
    const timer = setInterval(() => tick((n) => n + 1), 1000);
    return () => clearInterval(timer);
  }, [status]);
  if (!run) return html`<span class="run-state" data-status="idle"></span>`;
  let time = "";
  if (status === "running" && run.started !== null) time = formatDuration(Date.now() - run.started);
  else if (run.duration_ms !== null) time = formatDuration(run.duration_ms);
  return html`<span class="run-state" data-status=${status} role="status">
    <span class="dot" aria-hidden="true"></span>${STATUS_LABELS[status] || status}
    ${time && html` <span class="elapsed">${time}</span>`}
    ${run.by && html` <span class="by">by ${run.by}</span>`}
  </span>`;
}

function Conflict({ conflict, onResolve }) {
  const { mine, theirs } = conflict;
  return html`<div class="conflict" role="alert" data-conflict>
    <p><strong>A teammate changed this cell while you were editing it.</strong> Nothing was overwritten; choose which to keep.</p>
    <div class="conflict-texts">
      <figure><figcaption>Theirs${theirs ? ` (version ${theirs.version})` : " (deleted)"}</figcaption>
        <pre data-theirs>${theirs ? theirs.source : ""}</pre></figure>
      <figure><figcaption>Yours</figcaption><pre data-mine>${mine.source}</pre></figure>
    </div>
    <button type="button" data-action="keep-mine" onClick=${() => onResolve("mine")}>Keep mine</button>
    <button type="button" class="quiet" data-action="take-theirs" onClick=${() => onResolve("theirs")}>Take theirs</button>
  </div>`;
}

function OutputVariable({ value, set, readOnly }) {
  return html`<input class="output-variable" data-field="output-variable" defaultValue=${value || ""} placeholder="output variable"
    aria-label="Output variable" spellcheck="false" disabled=${readOnly} maxlength="200"
    onChange=${(e) => set(e.currentTarget.value.trim())} onKeyDown=${(e) => e.key === "Enter" && e.currentTarget.blur()} />`;
}

export function Cell(props) {
  // readOnly: no edits (a closed session, or a viewer's or runner's page); canRun: runs and cancels
  const { cell, run, edit, selected, editing, cellTypes, connections, session, token, readOnly, canRun, actions, eager } = props;
  edit.rev.value; // render again on every local change
  const shown = edit.current(cell);
  const status = run ? run.status : "idle";
  const busy = status === "queued" || status === "running";
  const holder = useRef(null);
  const section = useRef(null);
  const editor = useRef(null);
  const latest = useRef(actions); // the editor's handlers outlive a render: they call the latest actions
  latest.current = actions;
  const conflict = edit.conflict.value;
  const markdownView = shown.type === "markdown" && !(editing && selected) && !conflict;
  // A markdown cell shows its run's output (templates expanded) while that
  // run is of the text as it is; once the text changed, the text itself.
  const fresh = run && !edit.draft && run.queued_seq !== null && run.queued_seq > (cell.version ?? 0);
  const showMarkdownOutput = markdownView && fresh && !run.output.isEmpty;

  // A CodeMirror editor is made when the cell comes near the viewport or is
  // edited, not for every cell at once: a long notebook opens at the speed
  // of its first screen. Until then the source shows as plain text. The
  // first cell (`eager`) has its editor from its first render: it is where
  // a person who opens the notebook starts.
  const [near, setNear] = useState(false);
  const [live, setLive] = useState(() => Boolean(eager) && !markdownView);
  useEffect(() => {
    const watch = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) {
        setNear(true);
        watch.disconnect();
      }
    }, { rootMargin: "400px 0px" });
    watch.observe(section.current);
    return () => watch.disconnect();
  }, []);
  useEffect(() => {
    if (live || !near || markdownView) return undefined;
    return inTurn(() => setLive(true)); // one editor per task: frames keep coming while a notebook opens
  }, [near, markdownView, live]);
  // The cell being edited gets its editor in the same render (a layout
  // effect, before the next event): keys typed at once reach it.
  const hasEditor = live || (editing && selected);

  useLayoutEffect(() => {
    if (!hasEditor) return undefined;
    editor.current = createEditor(holder.current, {
      text: shown.source,
      type: shown.type,
      readOnly,
      label: `Source of cell ${cell.id}`,
      onChange: (text) => latest.current.change(cell.id, { source: text }),
      onRun: (mode) => latest.current.run(cell.id, mode),
      onEscape: () => latest.current.command(cell.id),
      onFocus: () => latest.current.edit(cell.id, false),
    });
    if (editing && selected) editor.current.focus();
    return () => {
      editor.current.destroy();
      editor.current = null;
    };
  }, [hasEditor]);

  // The document's text replaces what the editor shows only when nothing typed here is pending.
  useEffect(() => {
    if (editor.current && !edit.draft && editor.current.text() !== cell.source) editor.current.setText(cell.source);
  });
  useEffect(() => editor.current?.setType(shown.type), [shown.type]);
  useEffect(() => editor.current?.setReadOnly(readOnly), [readOnly]);
  useEffect(() => {
    if (editor.current && editing && selected && !editor.current.view.hasFocus) editor.current.focus();
  }, [editing, selected]);

  const types = cellTypes.includes(shown.type) ? cellTypes : [...cellTypes, shown.type];
  const set = (fields) => actions.change(cell.id, fields, true);
  return html`<section ref=${section} class=${"cell" + (selected ? " selected" : "") + (editing && selected ? " editing" : "")}
      data-cell-id=${cell.id} data-run-status=${status} data-type=${shown.type} tabIndex="-1"
      aria-label=${`${shown.type} cell`} aria-current=${selected ? "true" : undefined}
      onMouseDown=${() => actions.select(cell.id)}>
    <div class="cell-bar">
      <select class="cell-type" data-field="type" aria-label="Cell type" value=${shown.type} disabled=${readOnly}
        onChange=${(e) => set({ type: e.currentTarget.value })}>
        ${types.map((t) => html`<option value=${t}>${t}</option>`)}
      </select>
      ${shown.type !== "markdown" && html`<${OutputVariable} value=${shown.output_variable}
        readOnly=${readOnly} set=${(v) => set({ output_variable: v || undefined })} />`}
      <${RunState} run=${run} />
      ${edit.dirty.value && html`<span class="unsaved" title="Your edit is on its way to the session">editing…</span>`}
      <span class="spacer"></span>
      ${busy
        ? html`<button type="button" class="icon" data-action="cancel" title="Cancel this run" disabled=${!canRun}
            onClick=${() => actions.cancel(run.run)}>■</button>`
        : html`<button type="button" class="icon" data-action="run" title="Run (Ctrl+Enter)" disabled=${!canRun}
            onClick=${() => actions.run(cell.id, "stay")}>▶</button>`}
      <button type="button" class="icon" data-action="run-from" title="Run this cell and all below, stopping at an error"
        disabled=${!canRun} onClick=${() => actions.runFrom(cell.id)}>⇊</button>
      <button type="button" class="icon" data-action="move-up" title="Move up" disabled=${readOnly}
        onClick=${() => actions.move(cell.id, -1)}>↑</button>
      <button type="button" class="icon" data-action="move-down" title="Move down" disabled=${readOnly}
        onClick=${() => actions.move(cell.id, 1)}>↓</button>
      <button type="button" class="icon" data-action="insert-below" title="Insert a cell below (B)" disabled=${readOnly}
        onClick=${() => actions.insert(cell.id, "below")}>+</button>
      <button type="button" class="icon danger" data-action="delete" title="Delete (D D)" disabled=${readOnly}
        onClick=${() => actions.remove(cell.id)}>✕</button>
    </div>
    ${!markdownView && html`<${CellOptions} type=${shown.type} options=${shown.options} connections=${connections}
      readOnly=${readOnly} set=${(options) => set({ options })} />`}
    <div class="editor" ref=${holder} hidden=${markdownView || !hasEditor}></div>
    ${!hasEditor && !markdownView && html`<pre class="cell-static" data-static-source aria-label=${`Source of cell ${cell.id}`}
      onMouseDown=${() => { setLive(true); actions.edit(cell.id); }}>${shown.source}</pre>`}
    ${markdownView && !showMarkdownOutput && html`<div class="markdown rendered" data-markdown
      onDblClick=${() => !readOnly && actions.edit(cell.id, true)}
      dangerouslySetInnerHTML=${{ __html: shown.source.trim() ? markdownToHtml(shown.source) : '<p class="muted">Empty markdown cell: double-click to edit</p>' }}></div>`}
    ${conflict && html`<${Conflict} conflict=${conflict} onResolve=${(choice) => actions.resolve(cell.id, choice)} />`}
    ${edit.error.value && html`<p class="error" role="alert">${edit.error.value}</p>`}
    ${run && (shown.type !== "markdown" || showMarkdownOutput || !markdownView) && html`<div class="cell-output"
      onDblClick=${() => markdownView && !readOnly && actions.edit(cell.id, true)}>
      <${OutputView} key=${run.run} output=${run.output} session=${session} run=${run.run} token=${token} />
    </div>`}
  </section>`;
}
