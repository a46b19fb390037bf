// Work cut into tasks, so the browser can draw a frame between two pieces.

const channel = new MessageChannel();
const ready = [];
channel.port1.onmessage = () => ready.shift()();

/** Runs fn in a new task at once (a nested setTimeout would wait >= 4 ms). */
export function nextTask(fn) {
  ready.push(fn);
  channel.port2.postMessage(null);
}

const turns = [];
let turning = false;

function takeTurn() {
  while (turns.length && turns[0].cancelled) turns.shift();
  const job = turns.shift();
  if (turns.length) nextTask(takeTurn);
  else turning = false;
  if (job) job.fn();
}

/** Runs fn in a task of its own after the work queued before it, one piece
 * per task in the order asked. Returns a function that cancels it if it has
 * not run yet. Used for CodeMirror editors: the cells of a notebook that
 * opens come into view together, and making all their editors in one task
 * would hold back the first frame by all of them. */
export function inTurn(fn) {
  const job = { fn, cancelled: false };
  turns.push(job);
  if (!turning) {
    turning = true;
    nextTask(takeTurn);
  }
  return () => {
    job.cancelled = true;
  };
}
