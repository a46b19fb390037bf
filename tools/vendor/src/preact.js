// Preact, its hooks, htm (tagged templates instead of JSX: no build step) and
// signals in ONE bundle, so every module shares one Preact instance.
export { h, render, Fragment, createContext } from "preact";
export { useState, useEffect, useRef, useMemo, useCallback, useContext, useLayoutEffect } from "preact/hooks";
export { signal, computed, effect, batch, useSignal, useComputed, useSignalEffect } from "@preact/signals";
import { h } from "preact";
import htm from "htm";

/** html`<div class=${x}>...</div>`: htm bound to Preact's h. */
export const html = htm.bind(h);
