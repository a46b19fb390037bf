// The notebook's keyboard shortcuts, as data: the help overlay (views/help.js)
// lists them and the notebook's key handling follows them (issue 13,
// "Keyboard"; the modes are Jupyter's: "edit" while typing in a cell's editor,
// "command" when a cell is selected but not being edited).
//
// An entry:
//   id        what the notebook does, for its handler
//   keys      key names pressed together (KeyboardEvent.key values, letters in
//             upper case); "Mod" is Cmd on macOS and Ctrl elsewhere
//   sequence  true: the keys are pressed one after the other (D, D)
//   alt       another `keys` that does the same
//   mode      "edit", "command" or "edit and command"
//   does      what it does, for people

export const SHORTCUTS = [
  { id: "run-and-next", keys: ["Shift", "Enter"], mode: "edit and command", does: "Run the cell and move to the next" },
  { id: "run", keys: ["Mod", "Enter"], mode: "edit and command", does: "Run the cell and stay on it" },
  { id: "command-mode", keys: ["Escape"], mode: "edit", does: "Stop editing (command mode)" },
  { id: "edit-mode", keys: ["Enter"], mode: "command", does: "Edit the selected cell (edit mode)" },
  { id: "select-previous", keys: ["ArrowUp"], alt: ["K"], mode: "command", does: "Select the cell above" },
  { id: "select-next", keys: ["ArrowDown"], alt: ["J"], mode: "command", does: "Select the cell below" },
  { id: "insert-above", keys: ["A"], mode: "command", does: "Insert a cell above" },
  { id: "insert-below", keys: ["B"], mode: "command", does: "Insert a cell below" },
  { id: "delete", keys: ["D", "D"], sequence: true, mode: "command", does: "Delete the cell" },
  { id: "to-markdown", keys: ["M"], mode: "command", does: "Change the cell to markdown" },
  { id: "to-python", keys: ["Y"], mode: "command", does: "Change the cell to Python" },
  { id: "help", keys: ["?"], mode: "command", does: "Show this list of shortcuts" },
];

function platformIsMac(nav) {
  const platform = (nav && ((nav.userAgentData && nav.userAgentData.platform) || nav.platform)) || "";
  return /mac|iphone|ipad|ipod/i.test(platform);
}

// Read once: the platform does not change, and this is asked at every key
// press and render (a profile of the notebook's first render showed it).
const MAC = platformIsMac(globalThis.navigator);

/** True on macOS (and iOS), where "Mod" is the Command key. */
export function isMac(nav) {
  return nav === undefined ? MAC : platformIsMac(nav);
}

const NAMES = { Escape: "Esc", ArrowUp: "↑", ArrowDown: "↓", ArrowLeft: "←", ArrowRight: "→" };
const SPOKEN = { ArrowUp: "Up arrow", ArrowDown: "Down arrow", ArrowLeft: "Left arrow", ArrowRight: "Right arrow" };

/** How a key is written for people: "Mod" -> "Cmd" / "Ctrl", "Escape" -> "Esc", arrows as arrows. */
export function keyLabel(key, mac = isMac()) {
  if (key === "Mod") return mac ? "Cmd" : "Ctrl";
  if (key === "Alt" && mac) return "Option";
  return NAMES[key] || key;
}

/** A name for screen readers where keyLabel is a symbol, else null. */
export function keySpoken(key) {
  return SPOKEN[key] || null;
}

/** Whether a keydown event is the chord `keys` (one step of a sequence is
 * one key: ["D"]). Modifiers must match exactly: A is not Ctrl+A. A letter
 * matches in either case but not with Shift (unless listed); a punctuation
 * key such as "?" ignores Shift, which some keyboard layouts need to type it. */
export function chordMatches(keys, event, mac = isMac()) {
  const want = { ctrl: false, meta: false, alt: false, shift: false };
  let main = null;
  for (const key of keys) {
    if (key === "Mod") want[mac ? "meta" : "ctrl"] = true;
    else if (key === "Ctrl") want.ctrl = true;
    else if (key === "Alt") want.alt = true;
    else if (key === "Shift") want.shift = true;
    else main = key;
  }
  if (main === null || typeof event.key !== "string") return false;
  const letter = /^[A-Za-z]$/.test(main);
  if (letter ? event.key.toLowerCase() !== main.toLowerCase() : event.key !== main) return false;
  if (event.ctrlKey !== want.ctrl || event.metaKey !== want.meta || event.altKey !== want.alt) return false;
  return letter || main.length > 1 ? event.shiftKey === want.shift : true;
}
