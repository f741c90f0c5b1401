// Small helpers so every catch site handles `unknown` the same way and keeps the cause chain.

/** The message of anything thrown; never throws itself. */
export function errorMessage(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (typeof e === 'string') return e;
  try {
    const text = JSON.stringify(e);
    return text === undefined ? String(e) : text;
  } catch {
    return String(e);
  }
}

/** A new Error saying what we were doing, with the original as `cause` and its message appended. */
export function wrapError(context: string, cause: unknown): Error {
  return new Error(`${context}: ${errorMessage(cause)}`, { cause });
}

/** True for the error an aborted signal produces (DOMException or Error named AbortError). */
export function isAbortError(e: unknown): boolean {
  return typeof e === 'object' && e !== null && (e as { name?: unknown }).name === 'AbortError';
}

/** The error to reject with when `signal` aborts: its reason when that is an Error, else an AbortError. */
export function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return reason;
  return new DOMException(reason === undefined ? 'The operation was aborted' : errorMessage(reason), 'AbortError');
}
