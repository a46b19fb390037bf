// Importing an .ipynb into the library (notebook.save with `ipynb`; any
// nbformat version, outputs kept, converted by the runtime with nbformat).
//
// Choosing a file (#import-notebook) reads it, parses it as JSON and imports
// it under its file name. What can go wrong is said in #import-error: a file
// that is not JSON or not a notebook object (found here, nothing sent), a
// file too large for one message, and whatever the runtime finds wrong (its
// own message, naming the place in the notebook). When the name is taken,
// #import-conflict offers the next free name (#import-name, #import-as) or
// replacing that notebook (#import-replace, with the version the list
// showed: `conflict` when it changed meanwhile).
//
// Usage: <${ImportNotebook} store=${store} connected=${bool} />

import { html, useState } from "../../vendor/preact.js";
import { importNotebook, readNotebookFile } from "../notebook_actions.js";

export function ImportNotebook({ store, connected }) {
  const [pending, setPending] = useState(null); // {fileName, ipynb, name, version, suggestion}
  const [error, setError] = useState(null);
  const [done, setDone] = useState(null);
  const [busy, setBusy] = useState(false);

  const save = async (fileName, ipynb, name, replace = null) => {
    setBusy(true);
    setError(null);
    setDone(null);
    try {
      const notebook = await importNotebook(store, name, ipynb, replace);
      setPending(null);
      setDone(`Imported ${fileName} as “${notebook.name}”.`);
    } catch (e) {
      if (e.code === "exists") {
        setPending({ fileName, ipynb, ...e.details });
      } else if (e.code === "conflict") {
        const current = e.details.current || null;
        setPending((p) => p && { ...p, version: current });
        setError(current
          ? `“${name}” changed since the list showed it. Replace it again to write over it as it is now.`
          : `“${name}” was deleted meanwhile: import it again.`);
      } else {
        setError(`Cannot import ${fileName}: ${e.message}`);
      }
    } finally {
      setBusy(false);
    }
  };

  const choose = async (event) => {
    const input = event.currentTarget;
    const file = input.files && input.files[0];
    input.value = ""; // choosing the same file again is a new choice
    if (!file) return;
    setPending(null);
    setError(null);
    setDone(null);
    let read;
    try {
      read = await readNotebookFile(file);
    } catch (e) {
      setError(e.message);
      return;
    }
    await save(file.name, read.ipynb, read.name);
  };

  const importAs = (event) => {
    event.preventDefault();
    const name = event.currentTarget.elements.name.value.trim();
    if (!name) {
      setError("Give the imported notebook a name.");
      return;
    }
    save(pending.fileName, pending.ipynb, name);
  };

  return html`<div class="import" aria-busy=${busy ? "true" : "false"}>
    <label class="file-button" data-disabled=${!connected || busy ? "true" : undefined}>
      <input id="import-notebook" type="file" accept=".ipynb,application/x-ipynb+json,application/json"
        disabled=${!connected || busy} onChange=${choose} />
      <span>Import .ipynb…</span>
    </label>
    ${pending && html`<div id="import-conflict" class="confirm" role="alert" data-name=${pending.name}>
      <p>A notebook named “${pending.name}” exists already. Import ${pending.fileName} under another name, or replace it.</p>
      <form class="row-form" onSubmit=${importAs}>
        <input id="import-name" name="name" key=${pending.suggestion} defaultValue=${pending.suggestion} maxlength="200"
          autocomplete="off" aria-label="Name for the imported notebook" />
        <button id="import-as" type="submit" class="small" disabled=${busy}>Import</button>
        <button id="import-replace" type="button" class="danger small" disabled=${busy}
          onClick=${() => save(pending.fileName, pending.ipynb, pending.name, pending.version)}>Replace “${pending.name}”</button>
        <button type="button" class="quiet small" data-action="cancel" onClick=${() => setPending(null)}>Cancel</button>
      </form>
    </div>`}
    ${error && html`<p class="error" role="alert" id="import-error">${error}</p>`}
    ${done && html`<p class="hint" role="status" id="import-done">${done}</p>`}
  </div>`;
}
