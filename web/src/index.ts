// varco-web: VARCO-VISION on the user's own GPU. Everything runs in a Web Worker; the model is downloaded
// once into IndexedDB (verified, resumable) and answers offline afterwards. Nothing is sent anywhere.

export { createEngine, VarcoEngine } from "./engine.js";
export * from "./errors.js";
export type * from "./types.js";
