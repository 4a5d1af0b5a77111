// Typed errors: every failure a page can meet, with a name it can switch on. Errors cross the worker
// boundary as {name, message} and are rebuilt here.

// Each class names itself: bundlers minify class names, and pages switch on `name`.
export class VarcoError extends Error {
  override name = "VarcoError";
}
/** The browser has no WebGPU, or no adapter. */
export class NoWebGPUError extends VarcoError {
  override name = "NoWebGPUError";
}
/** The model does not fit: GPU limits or memory. */
export class GPUMemoryError extends VarcoError {
  override name = "GPUMemoryError";
}
/** The GPU device was lost (a driver reset, the browser moving to another GPU); the engine reloads the model
 * from this computer's cache by itself (`onDeviceLost` says when it is ready again). */
export class GPUDeviceLostError extends VarcoError {
  override name = "GPUDeviceLostError";
}
/** The origin's storage quota cannot hold the model. */
export class QuotaError extends VarcoError {
  override name = "QuotaError";
}
/** Downloading failed after the retries (network, HTTP status). */
export class DownloadError extends VarcoError {
  override name = "DownloadError";
}
/** A shard or file does not match its SHA-256, twice. */
export class IntegrityError extends VarcoError {
  override name = "IntegrityError";
}
/** The manifest or a file is malformed or of another version. */
export class ModelFormatError extends VarcoError {
  override name = "ModelFormatError";
}
/** The request was cancelled (AbortSignal, unload). */
export class AbortError extends VarcoError {
  override name = "AbortError";
}
/** Anything the engine refused: prompt too long, bad image, … */
export class EngineError extends VarcoError {
  override name = "EngineError";
}

const byName: Record<string, new (m: string) => VarcoError> = {
  NoWebGPUError, GPUMemoryError, GPUDeviceLostError, QuotaError, DownloadError, IntegrityError, ModelFormatError, AbortError, EngineError,
};

export function rebuild(e: { name: string; message: string }): VarcoError {
  const C = byName[e.name] ?? EngineError;
  return new C(e.message);
}
