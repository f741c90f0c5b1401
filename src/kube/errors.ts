// Classify the errors that client-node and undici throw, once, so callers never string-match messages.
import { ApiException } from '@kubernetes/client-node/dist/gen/apis/exception.js';
import { realClock } from '../common/clock.js';
import { isAbortError, isNetworkError } from '../common/errors.js';
import { retryAfterFromHeaders } from '../common/retry-after.js';

export { isNetworkError };

/** HTTP status of an API error: `ApiException.code`, the `statusCode` of a client-node Watch error, or a Status body's code. */
export function httpStatus(e: unknown): number | undefined {
  if (e instanceof ApiException) return e.code;
  if (!isRecord(e)) return undefined;
  if (typeof e.statusCode === 'number') return e.statusCode;
  // A Status object (watch ERROR event) carries its HTTP code as `code`; DOMException's numeric `code` is not one.
  if (typeof e.code === 'number' && !(e instanceof DOMException) && e.code >= 100 && e.code < 600) return e.code;
  return undefined;
}

export function isNotFound(e: unknown): boolean {
  return httpStatus(e) === 404;
}

/** 409 caused by a stale resourceVersion (not by a create that found the name taken). */
export function isConflict(e: unknown): boolean {
  return httpStatus(e) === 409 && statusReason(e) !== 'AlreadyExists';
}

export function isAlreadyExists(e: unknown): boolean {
  return httpStatus(e) === 409 && statusReason(e) === 'AlreadyExists';
}

/** 410 Gone / Expired: the resourceVersion or continue token is too old; the caller must relist. */
export function isGone(e: unknown): boolean {
  return httpStatus(e) === 410;
}

/** The call was cancelled by our own AbortSignal (stop), not failed. */
export const isAbort = isAbortError;

/** Worth retrying with backoff: throttling, server errors, timeouts and socket-level failures. */
export function isRetryable(e: unknown): boolean {
  const status = httpStatus(e);
  if (status !== undefined) return status === 408 || status === 429 || status >= 500;
  return isNetworkError(e);
}

/** The `reason` of the Kubernetes `Status` body carried by an error (client-node keeps `body` as a raw string). */
export function statusReason(e: unknown): string | undefined {
  if (!isRecord(e)) return undefined;
  const status = parseStatusBody(e.body);
  if (status?.reason !== undefined) return status.reason;
  // A watch ERROR event's object is itself a Status.
  if (e.kind === 'Status' && typeof e.reason === 'string') return e.reason;
  return undefined;
}

/** The `message` of the Status body, for logs. */
export function statusMessage(e: unknown): string | undefined {
  if (!isRecord(e)) return undefined;
  return parseStatusBody(e.body)?.message;
}

/** Delay the server asked for (`Retry-After` as seconds or an HTTP date), in ms from `nowMs`. */
export function retryAfterMs(e: unknown, nowMs: number = realClock.now()): number | undefined {
  if (!(e instanceof ApiException)) return undefined;
  return retryAfterFromHeaders(e.headers, nowMs);
}

/** A short, log-friendly description of any error. */
export function describeError(e: unknown): string {
  const status = httpStatus(e);
  if (status !== undefined) {
    const reason = statusReason(e);
    return reason ? `HTTP ${status} ${reason}` : `HTTP ${status}`;
  }
  if (e instanceof Error) {
    const cause = isRecord(e.cause) && typeof e.cause.code === 'string' ? ` (${e.cause.code})` : '';
    return `${e.name}: ${e.message}${cause}`;
  }
  return String(e);
}

interface StatusBody { reason?: string; message?: string; code?: number }

function parseStatusBody(body: unknown): StatusBody | undefined {
  let parsed: unknown = body;
  if (typeof body === 'string') {
    try {
      parsed = JSON.parse(body);
    } catch {
      return undefined;
    }
  }
  if (!isRecord(parsed)) return undefined;
  return {
    reason: typeof parsed.reason === 'string' ? parsed.reason : undefined,
    message: typeof parsed.message === 'string' ? parsed.message : undefined,
    code: typeof parsed.code === 'number' ? parsed.code : undefined,
  };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null;
}
