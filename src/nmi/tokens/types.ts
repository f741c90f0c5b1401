// Types shared by the token sources, the cache and the provider facade. Kept local to this folder on purpose:
// NMI's handlers build a TokenRequestIdentity from the normalised AzureIdentity and never hand us CR objects.

/** 0 = user-assigned managed identity, 1 = service principal with secret, 2 = service principal with certificate. */
export type IdentityType = 0 | 1 | 2;

export interface SecretRef {
  readonly name: string;
  readonly namespace: string;
}

/** The normalised AzureIdentity fields needed to acquire a token, plus the key its tokens are cached under. */
export interface TokenRequestIdentity {
  /**
   * Stable, exact cache key. Build it with `identityCacheKey()` (namespace/name + uid + resourceVersion) or
   * `nodeIdentityCacheKey()`; two identities that differ in anything that matters must have different keys.
   */
  readonly cacheKey: string;
  /** The AzureIdentity's namespace: its clientPassword Secret must be in it (unless an admin allows otherwise). */
  readonly namespace: string;
  readonly type: IdentityType;
  readonly clientID: string;
  readonly resourceID?: string;
  readonly tenantID?: string;
  readonly auxiliaryTenantIDs?: readonly string[];
  readonly adEndpoint?: string;
  readonly clientPassword?: SecretRef;
}

export type { Token } from '../core/imds-body.js';

/**
 * Why a token could not be had. NMI maps `upstream` (IMDS or AAD answered non-2xx) and `refused` to 403 and
 * everything else to 503, as the original does for the first three (see `tokenErrorHttpStatus`).
 * - `upstream`: the token endpoint answered with an error status; `status` and `body` are what it said.
 * - `unavailable`: transport failure, timeout, or retries exhausted without an answer.
 * - `invalid`: our input is unusable (secret missing or malformed, PKCS#12 that will not decode, unknown type).
 * - `refused`: the identity asks for something the admin's policy does not allow (a Secret in another namespace,
 *   an authority not allowed); refused before any Secret read or connection.
 * - `throttled`: the caller started too many upstream fetches lately (per-pod miss limit); `retryAfterMs` says when.
 */
export type TokenErrorKind = 'upstream' | 'unavailable' | 'invalid' | 'refused' | 'throttled';

/** What a pod is told when its identity's credential cannot be used: the detail (Secret, keys) stays in NMI's log. */
/** What a pod is told of a failure whose detail only the NMI log may carry. */
export const GENERIC_FAILURE_MESSAGE = 'token acquisition failed; the NMI log on this node says why';
export const GENERIC_CREDENTIAL_MESSAGE = "the identity's credential cannot be used; the NMI log on this node says why";

export class TokenError extends Error {
  override readonly name = 'TokenError';
  readonly kind: TokenErrorKind;
  readonly status?: number;
  readonly body?: string;
  /**
   * The text that may go into the answer to the pod. `message` may name a Secret, its namespace or its keys and is
   * for the log only; for `invalid` and `refused` errors this is a generic sentence unless the thrower chose one.
   */
  readonly publicMessage: string;
  readonly retryAfterMs?: number;

  constructor(
    kind: TokenErrorKind,
    message: string,
    opts: { status?: number; body?: string; retryAfterMs?: number; cause?: unknown; publicMessage?: string } = {},
  ) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.kind = kind;
    if (opts.status !== undefined) this.status = opts.status;
    if (opts.body !== undefined) this.body = opts.body;
    if (opts.retryAfterMs !== undefined) this.retryAfterMs = opts.retryAfterMs;
    this.publicMessage =
      opts.publicMessage ?? (kind === 'invalid' || kind === 'refused' ? GENERIC_CREDENTIAL_MESSAGE : message);
  }
}

/** The status NMI answers with for a failed token acquisition (upstream §3.3 step 7; `refused` and 429 are ours). */
export function tokenErrorHttpStatus(err: unknown): 403 | 429 | 503 {
  if (!(err instanceof TokenError)) return 503;
  if (err.kind === 'upstream' || err.kind === 'refused') return 403;
  return err.kind === 'throttled' ? 429 : 503;
}

/**
 * IMDS answered 400 "Identity not found": the VM has no identity the request names (or none it could pick). The node
 * path answers it as IMDS did, so that it reads the same as a refusal of an identity an AzureIdentity declares.
 */
export function tokenErrorIsIdentityNotFound(err: unknown): boolean {
  if (!(err instanceof TokenError) || err.kind !== 'upstream' || err.status !== 400 || err.body === undefined) return false;
  try {
    const body: unknown = JSON.parse(err.body);
    if (typeof body !== 'object' || body === null) return false;
    const description = (body as Record<string, unknown>)['error_description'];
    return typeof description === 'string' && description.trim().toLowerCase() === 'identity not found';
  } catch {
    return false;
  }
}

/** Whole seconds a throttled caller should wait (the Retry-After NMI sends), or undefined. */
export function tokenErrorRetryAfterSeconds(err: unknown): number | undefined {
  if (!(err instanceof TokenError) || err.retryAfterMs === undefined) return undefined;
  return Math.max(1, Math.ceil(err.retryAfterMs / 1000));
}

/** What the pod may be told about a failed acquisition; never a Secret's name, namespace, keys or content. */
export function tokenErrorPublicMessage(err: unknown): string {
  return err instanceof TokenError ? err.publicMessage : GENERIC_FAILURE_MESSAGE;
}

/** Cache key for an AzureIdentity: a recreated (new uid) or edited (new resourceVersion) identity never shares tokens. */
export function identityCacheKey(meta: {
  readonly namespace: string;
  readonly name: string;
  readonly uid?: string;
  readonly resourceVersion?: string;
}): string {
  return `${meta.namespace}/${meta.name}@${meta.uid ?? ''}#${meta.resourceVersion ?? ''}`;
}

/** Cache key for the node's own identity (exception path): by client id, by resource id, or IMDS's default. */
export function nodeIdentityCacheKey(identity: { readonly clientId?: string; readonly resourceId?: string; readonly objectId?: string } = {}): string {
  if (identity.clientId) return `node:${identity.clientId}`;
  if (identity.resourceId) return `node:res:${identity.resourceId.toLowerCase()}`;
  if (identity.objectId) return `node:oid:${identity.objectId.toLowerCase()}`;
  return 'node:system';
}
