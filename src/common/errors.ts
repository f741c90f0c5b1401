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

/** The message of anything thrown with the first line of its cause, for logs and events: `fetch failed (connect ECONNREFUSED …)`. */
export function errorText(e: unknown): string {
  const message = errorMessage(e);
  if (!(e instanceof Error) || !(e.cause instanceof Error)) return message;
  return `${message} (${e.cause.message.split('\n')[0] ?? ''})`;
}

// Node and undici socket error codes, plus the Azure SDKs' REQUEST_SEND_ERROR: the request may not have reached the
// server, or its answer was lost, so trying again is safe for our idempotent calls.
const NETWORK_ERROR_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND',
  'EAI_AGAIN', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED', 'REQUEST_SEND_ERROR',
]);

/**
 * A socket-level failure, anywhere in the cause chain: one of the codes above, a TimeoutError, or undici's
 * `TypeError('fetch failed' | 'terminated')` (which carries the system error as `cause`).
 */
export function isNetworkError(e: unknown): boolean {
  for (let cur: unknown = e, depth = 0; typeof cur === 'object' && cur !== null && depth < 5; depth++) {
    const rec = cur as { code?: unknown; name?: unknown; cause?: unknown };
    if (typeof rec.code === 'string' && NETWORK_ERROR_CODES.has(rec.code)) return true;
    if (rec.name === 'TimeoutError') return true;
    if (cur instanceof TypeError && (cur.message === 'fetch failed' || cur.message === 'terminated')) return true;
    cur = rec.cause;
  }
  return false;
}
