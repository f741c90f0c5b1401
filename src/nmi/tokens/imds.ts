// Managed identity tokens from the node's IMDS, over plain HTTP (what the original's adal MSI client did, §3.5),
// with a per-attempt timeout and a bounded retry budget the original lacked (it could add ~50 s).
import { TokenError, type Token } from './types.js';
import { realClock } from '../../common/clock.js';
import { retryAfterFromHeaders } from '../../common/retry-after.js';

/** The one Retry-After parser, re-exported for the token sources' callers. */
export { parseRetryAfter } from '../../common/retry-after.js';

export interface ImdsClientOptions {
  /** Base URL of IMDS, e.g. `http://169.254.169.254`. No trailing path. */
  readonly endpoint: string;
  /** Timeout of one HTTP attempt (connect + headers + body). */
  readonly attemptTimeoutMs?: number;
  /** Total time budget across attempts and the sleeps between them. */
  readonly totalBudgetMs?: number;
  /** Attempts in all, the first included. */
  readonly maxAttempts?: number;
  /** First backoff delay; doubles each retry, capped by `maxDelayMs`. */
  readonly baseDelayMs?: number;
  readonly maxDelayMs?: number;
  /** Injected for tests; defaults to the global fetch (undici). */
  readonly fetch?: typeof fetch;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly now?: () => number;
}

/** Which identity to ask IMDS for: a client id, an ARM resource id, or neither (the system-assigned identity). */
export type ImdsIdentitySelector =
  | { readonly clientId: string }
  | { readonly resourceId: string }
  | { readonly objectId: string }
  | Record<string, never>;

export interface ImdsClient {
  getToken(resource: string, identity: ImdsIdentitySelector): Promise<Token>;
}

export const IMDS_API_VERSION = '2018-02-01';

export function createImdsClient(opts: ImdsClientOptions): ImdsClient {
  const attemptTimeoutMs = opts.attemptTimeoutMs ?? 10_000;
  const totalBudgetMs = opts.totalBudgetMs ?? 30_000;
  const maxAttempts = Math.max(1, opts.maxAttempts ?? 5);
  const baseDelayMs = opts.baseDelayMs ?? 1_000;
  const maxDelayMs = opts.maxDelayMs ?? 16_000;
  const doFetch = opts.fetch ?? fetch;
  const sleep = opts.sleep ?? ((ms: number) => realClock.sleep(ms));
  const now = opts.now ?? realClock.now;
  const base = opts.endpoint.replace(/\/+$/, '');

  return {
    async getToken(resource, identity) {
      const url = imdsTokenUrl(base, resource, identity);
      const deadline = now() + totalBudgetMs;
      let lastError: TokenError | undefined;
      for (let attempt = 1; attempt <= maxAttempts; attempt++) {
        const remaining = deadline - now();
        if (remaining <= 0) break;
        const outcome = await attemptOnce(doFetch, url, Math.min(attemptTimeoutMs, remaining), now);
        if (outcome.kind === 'ok') return parseImdsTokenBody(outcome.body, resource);
        lastError = outcome.error;
        if (!outcome.retryable || attempt === maxAttempts) break;
        const backoff = Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1));
        const delay = Math.max(backoff, outcome.retryAfterMs ?? 0);
        // Do not sleep past the budget: a retry that cannot finish in time only delays the answer.
        if (now() + delay >= deadline) break;
        await sleep(delay);
      }
      throw lastError ?? new TokenError('unavailable', `IMDS token request got no answer within ${totalBudgetMs} ms`);
    },
  };
}

export function imdsTokenUrl(base: string, resource: string, identity: ImdsIdentitySelector): string {
  const q = new URLSearchParams({ 'api-version': IMDS_API_VERSION, resource });
  if ('clientId' in identity && identity.clientId) q.set('client_id', identity.clientId);
  else if ('resourceId' in identity && identity.resourceId) q.set('msi_res_id', identity.resourceId);
  else if ('objectId' in identity && identity.objectId) q.set('object_id', identity.objectId);
  return `${base}/metadata/identity/oauth2/token?${q.toString()}`;
}

type AttemptOutcome =
  | { kind: 'ok'; body: string }
  | { kind: 'error'; error: TokenError; retryable: boolean; retryAfterMs?: number };

async function attemptOnce(doFetch: typeof fetch, url: string, timeoutMs: number, now: () => number): Promise<AttemptOutcome> {
  const signal = AbortSignal.timeout(timeoutMs);
  try {
    const res = await doFetch(url, { headers: { Metadata: 'true' }, signal, redirect: 'manual' });
    const body = await res.text();
    if (res.status === 200) return { kind: 'ok', body };
    const error = new TokenError('upstream', `IMDS answered ${res.status}: ${describeErrorBody(body)}`, {
      status: res.status,
      body,
    });
    const retryAfterMs = retryAfterFromHeaders(res.headers, now());
    return {
      kind: 'error',
      error,
      retryable: isRetryableStatus(res.status),
      ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
    };
  } catch (cause) {
    const timedOut = signal.aborted;
    const message = timedOut ? `IMDS did not answer within ${timeoutMs} ms` : `IMDS request failed: ${errorText(cause)}`;
    return { kind: 'error', error: new TokenError('unavailable', message, { cause }), retryable: true };
  }
}

/** The statuses the original's adal MSI client retried (§3.5). */
export function isRetryableStatus(status: number): boolean {
  return status === 404 || status === 408 || status === 410 || status === 429 || (status >= 500 && status <= 599);
}

/**
 * Parse an IMDS token body strictly: `access_token` and `expires_on` are required; numeric fields may be JSON numbers
 * or strings of digits (IMDS sends strings). A malformed 200 is an upstream failure (IMDS answered, but not usably).
 */
export function parseImdsTokenBody(body: string, requestedResource: string): Token {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch (cause) {
    throw new TokenError('upstream', 'IMDS answered 200 with a body that is not JSON', { status: 200, body, cause });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new TokenError('upstream', 'IMDS answered 200 with a body that is not a JSON object', { status: 200, body });
  }
  const o = json as Record<string, unknown>;
  // A 200 body carries a token: keep only its shape in the error, which ends up in logs.
  const shape = JSON.stringify(Object.fromEntries(Object.keys(o).map((k) => [k, k === 'access_token' ? '[REDACTED]' : o[k]])));
  const bad = (what: string): TokenError =>
    new TokenError('upstream', `IMDS answered 200 with ${what}`, { status: 200, body: shape });
  const accessToken = o['access_token'];
  if (typeof accessToken !== 'string' || accessToken === '') throw bad('no access_token');
  const expiresOn = epochSeconds(o['expires_on']);
  if (expiresOn === undefined) throw bad('a missing or malformed expires_on');
  const notBefore = optionalNumber(o['not_before'], 'not_before', bad);
  const expiresIn = optionalNumber(o['expires_in'], 'expires_in', bad);
  const resource = typeof o['resource'] === 'string' && o['resource'] !== '' ? o['resource'] : requestedResource;
  const tokenType = typeof o['token_type'] === 'string' && o['token_type'] !== '' ? o['token_type'] : 'Bearer';
  const clientId = typeof o['client_id'] === 'string' && o['client_id'] !== '' ? o['client_id'] : undefined;
  return {
    accessToken,
    expiresOn,
    resource,
    tokenType,
    ...(notBefore === undefined ? {} : { notBefore }),
    ...(expiresIn === undefined ? {} : { expiresIn }),
    ...(clientId === undefined ? {} : { clientId }),
  };
}

function optionalNumber(v: unknown, name: string, bad: (what: string) => TokenError): number | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  const n = toNumber(v);
  if (n === undefined) throw bad(`a malformed ${name}`);
  return n;
}

/** expires_on as epoch seconds: a number, a string of digits, or (as msal accepts) an ISO-8601 date. */
function epochSeconds(v: unknown): number | undefined {
  const n = toNumber(v);
  if (n !== undefined) return n > 0 ? n : undefined;
  if (typeof v === 'string' && /^\d{4}-\d{2}-\d{2}T/.test(v)) {
    const ms = Date.parse(v);
    return Number.isNaN(ms) ? undefined : Math.floor(ms / 1000);
  }
  return undefined;
}

function toNumber(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isFinite(v) && v >= 0 ? Math.floor(v) : undefined;
  if (typeof v === 'string' && /^\d+$/.test(v.trim())) return Number(v.trim());
  return undefined;
}

/** A short description for logs and messages: the OAuth error fields if present, never the raw token. */
function describeErrorBody(body: string): string {
  try {
    const j: unknown = JSON.parse(body);
    if (typeof j === 'object' && j !== null) {
      const o = j as Record<string, unknown>;
      const parts = [o['error'], o['error_description']].filter((x): x is string => typeof x === 'string');
      if (parts.length > 0) return parts.join(': ');
    }
  } catch {
    // not JSON: fall through to the truncated text
  }
  return body.length > 200 ? `${body.slice(0, 200)}…` : body;
}

function errorText(e: unknown): string {
  if (e instanceof Error) {
    const cause = e.cause instanceof Error ? ` (${e.cause.message})` : '';
    return `${e.message}${cause}`;
  }
  return String(e);
}
