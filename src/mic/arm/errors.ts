// ARM errors classified once: throttled (with the delay ARM asked for), identity errors (with the offending
// identity IDs), retryable (5xx, network), fatal (other 4xx). Everything else in arm/ works on these classes.
import { canonicalResourceId, isUserAssignedIdentityId } from '../../azure/resource-id.js';
import { errorMessage, isNetworkError } from '../../common/errors.js';
import { retryAfterFromHeaders, type HeaderSource } from '../../common/retry-after.js';

export type ArmErrorClass =
  | { readonly kind: 'throttled'; readonly retryAfterMs: number | undefined; readonly status: number; readonly message: string }
  | {
      readonly kind: 'identity';
      readonly code: 'LinkedAuthorizationFailed' | 'FailedIdentityOperation';
      /** Canonical IDs of the user-assigned identities the message names. */
      readonly identityKeys: readonly string[];
      readonly status: number | undefined;
      readonly message: string;
    }
  | { readonly kind: 'retryable'; readonly status: number | undefined; readonly code: string | undefined; readonly message: string; readonly retryAfterMs: number | undefined }
  | { readonly kind: 'notFound'; readonly message: string }
  | { readonly kind: 'fatal'; readonly status: number | undefined; readonly code: string | undefined; readonly message: string };

const IDENTITY_CODES = ['LinkedAuthorizationFailed', 'FailedIdentityOperation'] as const;
/** Classifies an error thrown by the compute SDK (RestError, LRO failure, network error). */
export function classifyArmError(err: unknown, nowMs: number): ArmErrorClass {
  const status = numberProp(err, 'statusCode');
  const code = stringProp(err, 'code');
  const message = errorMessage(err);
  const retryAfterMs = retryAfterOf(err, nowMs);

  if (status === 429) return { kind: 'throttled', retryAfterMs, status, message };
  const identityCode = IDENTITY_CODES.find((c) => c === code || message.includes(c));
  if (identityCode) {
    return { kind: 'identity', code: identityCode, identityKeys: extractIdentityIds(message), status, message };
  }
  if (status === 404) return { kind: 'notFound', message };
  // 409: compute serialises writes per resource; another writer's update was still running.
  if (status === 409 || (status !== undefined && status >= 500)) return { kind: 'retryable', status, code, message, retryAfterMs };
  if (status !== undefined && status >= 400) return { kind: 'fatal', status, code, message };
  if (isNetworkError(err)) return { kind: 'retryable', status, code, message, retryAfterMs };
  // core-lro throws a plain Error when the async operation ends in Failed: the server gave up, so try again.
  if (message.startsWith('The long-running operation has failed')) {
    return { kind: 'retryable', status, code, message, retryAfterMs };
  }
  return { kind: 'fatal', status, code, message };
}

// Identity resource IDs as ARM prints them in LinkedAuthorizationFailed / FailedIdentityOperation messages:
// a quoted, comma-separated list ('id1,id2'), or embedded in a nested error message.
const IDENTITY_ID_PATTERN =
  /\/subscriptions\/[A-Za-z0-9_.()-]+\/resourcegroups\/[A-Za-z0-9_.()-]+\/providers\/Microsoft\.ManagedIdentity\/userAssignedIdentities\/[A-Za-z0-9_-]+/gi;

/** Extracts the user-assigned identity IDs an ARM error message names, canonical and deduplicated. */
export function extractIdentityIds(message: string): string[] {
  const found = new Set<string>();
  for (const match of message.matchAll(IDENTITY_ID_PATTERN)) {
    if (isUserAssignedIdentityId(match[0])) found.add(canonicalResourceId(match[0]));
  }
  return [...found];
}

// RestError keeps the response's HttpHeaders (a `get(name)` getter): Retry-After and Azure's retry-after-ms.
function retryAfterOf(err: unknown, nowMs: number): number | undefined {
  const headers = prop(prop(err, 'response'), 'headers');
  if (typeof prop(headers, 'get') !== 'function') return undefined;
  return retryAfterFromHeaders(headers as HeaderSource, nowMs);
}

function prop(obj: unknown, key: string): unknown {
  return typeof obj === 'object' && obj !== null ? (obj as Record<string, unknown>)[key] : undefined;
}
function numberProp(obj: unknown, key: string): number | undefined {
  const v = prop(obj, key);
  return typeof v === 'number' ? v : undefined;
}
function stringProp(obj: unknown, key: string): string | undefined {
  const v = prop(obj, key);
  return typeof v === 'string' ? v : undefined;
}
