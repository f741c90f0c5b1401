import type { IncomingMessage, ServerResponse } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { retryAfterHeader, type EmulatorOperation, type FaultBook, type FaultSpec } from './faults.js';
import { realClock } from '../../common/clock.js';

/** Error dialects: how each Azure surface words a failure. */
export type Dialect = 'arm' | 'imds' | 'aad' | 'admin';

/** A request matched to an operation, ready to run through faults, latency and the log. */
export interface RoutedRequest {
  readonly operation: EmulatorOperation;
  readonly target: string;
  readonly dialect: Dialect;
  /** The handler applies the operation's configured latency itself (long-running operations). */
  readonly ownsLatency?: boolean;
  readonly handle: () => Promise<void>;
}

/** Runs a routed request: injected fault or latency first, then the handler; logs the final status. */
export async function runRouted(
  routed: RoutedRequest,
  req: IncomingMessage,
  res: ServerResponse,
  faults: FaultBook,
  onError: (err: unknown) => void,
): Promise<void> {
  const path = req.url ?? '/';
  // Logged as the response is written (not on 'finish'), so a client that has its answer always finds it logged.
  if (routed.operation !== 'admin') {
    beforeResponse.set(res, (status) =>
      faults.record({
        time: new Date(realClock.now()).toISOString(),
        operation: routed.operation,
        method: req.method ?? 'GET',
        path,
        target: routed.target,
        status,
      }),
    );
  }
  try {
    const fault = routed.operation === 'admin' ? undefined : faults.take(routed.operation, routed.target);
    const delay = (fault?.latencyMs ?? 0) + (routed.ownsLatency ? 0 : faults.latency(routed.operation));
    if (delay > 0) await sleep(delay);
    if (fault?.status !== undefined && !routed.operation.endsWith('_lro')) {
      sendFault(res, fault, routed.dialect);
      return;
    }
    await routed.handle();
  } catch (err) {
    onError(err);
    if (!res.headersSent) sendJson(res, 500, defaultErrorBody(routed.dialect, 500));
    else res.destroy();
  }
}

const beforeResponse = new WeakMap<ServerResponse, (status: number) => void>();

function announce(res: ServerResponse, status: number): void {
  beforeResponse.get(res)?.(status);
  beforeResponse.delete(res);
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body);
  announce(res, status);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

export function sendEmpty(res: ServerResponse, status: number, headers: Record<string, string> = {}): void {
  announce(res, status);
  res.writeHead(status, { 'content-length': '0', ...headers });
  res.end();
}

export function sendFault(res: ServerResponse, fault: FaultSpec, dialect: Dialect): void {
  const status = fault.status ?? 500;
  const retryAfter = retryAfterHeader(fault.retryAfter, status);
  sendJson(res, status, fault.body ?? defaultErrorBody(dialect, status), retryAfter ? { 'retry-after': retryAfter } : {});
}

export function defaultErrorBody(dialect: Dialect, status: number): unknown {
  const [code, message] = statusWords(status);
  switch (dialect) {
    case 'arm':
      return { error: { code, message } };
    case 'imds':
      return { error: status === 429 ? 'too_many_requests' : 'unknown_error', error_description: message };
    case 'aad':
      return {
        error: status === 429 ? 'temporarily_unavailable' : 'server_error',
        error_description: `AADSTS90033: ${message}`,
        error_codes: [90033],
      };
    case 'admin':
      return { error: message };
  }
}

function statusWords(status: number): [string, string] {
  if (status === 429) {
    return ['TooManyRequests', 'The server rejected the request because too many requests have been received for this subscription.'];
  }
  if (status === 503) return ['ServiceUnavailable', 'The service is temporarily unavailable. Please retry later.'];
  if (status === 404) return ['NotFound', 'The requested resource was not found.'];
  if (status === 409) return ['Conflict', 'The request failed due to conflict with a concurrent request.'];
  if (status >= 500) return ['InternalServerError', 'An internal execution error occurred. Please retry later.'];
  return ['BadRequest', 'The request is invalid.'];
}

const MAX_BODY_BYTES = 4 * 1024 * 1024;

export async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    size += buf.length;
    if (size > MAX_BODY_BYTES) throw new Error('request body too large');
    chunks.push(buf);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export type JsonParse = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly error: string };

export function parseJson(text: string): JsonParse {
  if (text.trim() === '') return { ok: true, value: undefined };
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
