// useAction(): the state of a button's action that calls the runtime.
// `run(work, describe?)` sets `busy` while the promise `work()` is pending
// and `error` to what went wrong (the error's message, or what `describe(e)`
// makes of it); it resolves with work's value, or undefined when it failed.

import { useState } from "../../vendor/preact.js";

export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = async (work, describe = (e) => e.message) => {
    setBusy(true);
    setError(null);
    try {
      return await work();
    } catch (e) {
      setError(describe(e));
      return undefined;
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, setError, run };
}
