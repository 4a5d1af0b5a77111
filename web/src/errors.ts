// Typed errors: every failure a page can meet, with a name it can switch on. Errors cross the worker
// boundary as {name, message} and are rebuilt here.

export class VarcoError extends Error {
  constructor(message: string) {
    super(message);
    this.name = new.target.name;
  }
}
/** The browser has no WebGPU, or no adapter. */
export class NoWebGPUError extends VarcoError {}
/** The model does not fit: GPU limits or memory. */
export class GPUMemoryError extends VarcoError {}
/** The origin's storage quota cannot hold the model. */
export class QuotaError extends VarcoError {}
/** Downloading failed after the retries (network, HTTP status). */
export class DownloadError extends VarcoError {}
/** A shard or file does not match its SHA-256, twice. */
export class IntegrityError extends VarcoError {}
/** The manifest or a file is malformed or of another version. */
export class ModelFormatError extends VarcoError {}
/** The request was cancelled (AbortSignal, unload). */
export class AbortError extends VarcoError {}
/** Anything the engine refused: prompt too long, bad image, … */
export class EngineError extends VarcoError {}

const byName: Record<string, new (m: string) => VarcoError> = {
  NoWebGPUError, GPUMemoryError, QuotaError, DownloadError, IntegrityError, ModelFormatError, AbortError, EngineError,
};

export function rebuild(e: { name: string; message: string }): VarcoError {
  const C = byName[e.name] ?? EngineError;
  return new C(e.message);
}
