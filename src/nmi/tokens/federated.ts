// Tokens for a Federated AzureIdentity (spec.mode: Federated): NMI asks the Kubernetes TokenRequest API for a
// short-lived token of the calling pod's own service account, bound to that pod, and exchanges it at Azure AD with
// @azure/identity's ClientAssertionCredential under the identity's client ID. No identity is attached to any VM.
//
// Decisions (callers depend on them):
// - A service-account token is minted for one exchange and dropped: never cached, never used for another pod or a
//   later exchange (a retry mints a new one). Each acquisition builds its own ClientAssertionCredential, so MSAL's
//   in-memory cache can never hand a token obtained with one pod's assertion to a caller presenting no assertion.
//   NMI's own token cache sits above this, keyed per (identity, service account, resource): federatedCacheKey().
// - The tenant and the Azure AD authority are cluster settings, never the AzureIdentity's: a tenant who could name
//   the authority could collect the service-account tokens sent to it.
// - Azure AD's refusals map to the statuses attachment mode uses (403 refused, 503 unreachable), the AADSTS code
//   only in the log. "No matching federated identity record" within the propagation window after the credential was
//   written (or after NMI first met the refusal, when the caller cannot say) is retried in-call for a bounded time,
//   then answered 503 with a message saying it is worth retrying; after the window it is 403.
import { Agent as HttpsAgent } from 'node:https';
import { ClientAssertionCredential, type ClientAssertionCredentialOptions } from '@azure/identity';
import type { CoreV1Api } from '@kubernetes/client-node';
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import type { Clock } from '../../common/clock.js';
import { FEDERATED_AUDIENCE, serviceAccountSubject } from '../../crds/federation.js';
import { acquire, DEFAULT_AUTHORITY, responseRecorder, scopeForResource } from './service-principal.js';
import { GENERIC_FAILURE_MESSAGE, TokenError, type Token, type TokenRequestIdentity } from './types.js';

/** The pod NMI answers, as its pod index knows it. */
export interface FederatedPod {
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly serviceAccountName: string;
}

/** TokenRequest for the pod's own service account, bound to the pod; resolves with the JWT. */
export interface ServiceAccountTokenPort {
  request(pod: FederatedPod, audience: string, expirationSeconds: number): Promise<string>;
}

/** The TokenRequest shortest lifetime (the API server refuses less than 600 s). */
export const SERVICE_ACCOUNT_TOKEN_SECONDS = 600;

/** The port over @kubernetes/client-node: POST .../serviceaccounts/{name}/token with boundObjectRef naming the pod. */
export function kubeServiceAccountTokenPort(core: Pick<CoreV1Api, 'createNamespacedServiceAccountToken'>): ServiceAccountTokenPort {
  return {
    async request(pod, audience, expirationSeconds) {
      const answer = await core.createNamespacedServiceAccountToken({
        namespace: pod.namespace,
        name: pod.serviceAccountName,
        body: {
          apiVersion: 'authentication.k8s.io/v1',
          kind: 'TokenRequest',
          spec: {
            audiences: [audience],
            expirationSeconds,
            boundObjectRef: { kind: 'Pod', apiVersion: 'v1', name: pod.name, uid: pod.uid },
          },
        },
      });
      const token = answer.status?.token;
      if (typeof token !== 'string' || token === '') throw new Error('TokenRequest answered without status.token');
      return token;
    },
  };
}

export interface FederatedTokenSourceOptions {
  readonly serviceAccountTokens: ServiceAccountTokenPort;
  /** The tenant of the cluster's identities (azure.json tenantId). */
  readonly tenantId: string;
  /** Azure AD authority (default the public cloud's); the emulator's in tests. */
  readonly authorityHost?: string;
  /** Extra CA (PEM) for the authority (the emulator's). */
  readonly caPem?: string;
  /** Deadline of one exchange. Default 20 s. */
  readonly timeoutMs?: number;
  /** Retries the SDK pipeline makes on 5xx/429/transport errors. */
  readonly maxRetries?: number;
  /** How long after a credential is written "no matching federated identity record" counts as propagation. Default 5 min. */
  readonly propagationWindowMs?: number;
  /** Longest one request waits in-call for propagation before answering 503. Default 10 s. */
  readonly maxPropagationWaitMs?: number;
  /** Pause between in-call propagation retries. Default 2 s. */
  readonly propagationRetryMs?: number;
  readonly clock: Clock;
  readonly logger?: Logger;
}

export interface FederatedTokenOptions {
  /** When MIC wrote the credential for this service account, if the caller knows (e.g. from the AAI). */
  readonly credentialWrittenAtMs?: number;
}

export interface FederatedTokenSource {
  getToken(
    identity: Pick<TokenRequestIdentity, 'clientID' | 'cacheKey'>,
    resource: string,
    pod: FederatedPod,
    opts?: FederatedTokenOptions,
  ): Promise<Token>;
}

/** NMI's cache key for a federated identity's tokens: per service account (all its pods share one credential). */
export function federatedCacheKey(identityKey: string, pod: Pick<FederatedPod, 'namespace' | 'serviceAccountName'>): string {
  // identityKey first, so invalidating an AzureIdentity by its `namespace/name@` prefix drops these too.
  return `${identityKey}|sa=${JSON.stringify([pod.namespace, pod.serviceAccountName])}`;
}

/** AADSTS codes of "no federated identity record matches", which Azure AD also answers while a new credential propagates. */
const PROPAGATION_CODES = new Set([70021, 700211, 700213]);
/** Azure AD could not read the issuer's discovery document or keys (not the pod's fault). */
const ISSUER_UNREACHABLE = 90061;

export const PROPAGATING_MESSAGE =
  "the federated identity credential for this pod's service account is new and Azure AD does not accept it yet " +
  '(this can take a few minutes); retry shortly';
export const NO_CREDENTIAL_MESSAGE =
  "Azure AD has no federated identity credential for this pod's service account on this identity; " +
  "MIC's events on the AzureIdentity and `explain` say why";
export const REFUSED_MESSAGE = "Azure AD refused this pod's service-account token; the NMI log on this node says why";
export const SA_TOKEN_MESSAGE = "the pod's service-account token could not be issued; the NMI log on this node says why";

export function createFederatedTokenSource(opts: FederatedTokenSourceOptions): FederatedTokenSource {
  const clock = opts.clock;
  const log = opts.logger;
  const authorityHost = opts.authorityHost ?? DEFAULT_AUTHORITY;
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const windowMs = opts.propagationWindowMs ?? 300_000;
  const maxWaitMs = opts.maxPropagationWaitMs ?? 10_000;
  const retryMs = Math.max(1, opts.propagationRetryMs ?? 2_000);
  const agent = opts.caPem ? new HttpsAgent({ ca: opts.caPem, keepAlive: true }) : undefined;
  // First time NMI met "no matching record" per (client ID, subject) since the last success: bounds the window
  // when the caller cannot say when the credential was written.
  const firstRefusal = new LRUCache<string, number>({ max: 10_000 });

  const exchangeOnce = async (clientID: string, scope: string, pod: FederatedPod): Promise<{ token: string; expiresOnTimestamp: number; tokenType?: string }> => {
    const options: ClientAssertionCredentialOptions = {
      authorityHost,
      disableInstanceDiscovery: true,
      additionalPolicies: [{ policy: responseRecorder, position: 'perCall' }],
      ...(opts.maxRetries === undefined ? {} : { retryOptions: { maxRetries: opts.maxRetries } }),
      ...(agent ? { agent } : {}),
    };
    // A new service-account token for this one exchange, bound to this pod; minted before MSAL runs so its
    // failure keeps its own classification (MSAL would wrap an error thrown by the callback).
    const saToken = await mintServiceAccountToken(opts.serviceAccountTokens, pod, log);
    const assertion = (): Promise<string> => Promise.resolve(saToken);
    let credential: ClientAssertionCredential;
    try {
      credential = new ClientAssertionCredential(opts.tenantId, clientID, assertion, options);
    } catch (cause) {
      throw new TokenError('invalid', `cannot build the federated credential: ${errorText(cause)}`, { cause });
    }
    return acquire(credential, scope, opts.tenantId, timeoutMs);
  };

  return {
    async getToken(identity, resource, pod, tokenOpts = {}) {
      if (pod.serviceAccountName === '') {
        throw new TokenError('refused', `pod ${pod.namespace}/${pod.name} has no service account name`, { publicMessage: SA_TOKEN_MESSAGE });
      }
      if (identity.clientID === '') {
        throw new TokenError('invalid', `federated identity ${identity.cacheKey} has no clientID`, { publicMessage: 'the identity has no clientID' });
      }
      const subject = serviceAccountSubject(pod.namespace, pod.serviceAccountName);
      const refusalKey = `${identity.clientID}\n${subject}`;
      const scope = scopeForResource(resource);
      const started = clock.now();
      for (let attempt = 0; ; attempt++) {
        try {
          const access = await exchangeOnce(identity.clientID, scope, pod);
          firstRefusal.delete(refusalKey);
          const expiresOn = Math.floor(access.expiresOnTimestamp / 1000);
          log?.debug({ identity: identity.cacheKey, pod: pod.name, namespace: pod.namespace, resource, attempts: attempt + 1 }, 'federated token acquired');
          return {
            accessToken: access.token,
            expiresOn,
            expiresIn: Math.max(0, expiresOn - Math.floor(clock.now() / 1000)),
            resource,
            tokenType: access.tokenType ?? 'Bearer',
            clientId: identity.clientID,
          };
        } catch (err) {
          const aad = aadErrorOf(err);
          const ctx = { identity: identity.cacheKey, pod: pod.name, namespace: pod.namespace, resource, ...(aad ? { aadsts: aad.code } : {}) };
          if (aad === undefined || !PROPAGATION_CODES.has(aad.number)) throw classify(err, aad, log, ctx);
          const now = clock.now();
          const since = tokenOpts.credentialWrittenAtMs ?? firstRefusal.get(refusalKey) ?? now;
          if (tokenOpts.credentialWrittenAtMs === undefined && !firstRefusal.has(refusalKey)) firstRefusal.set(refusalKey, now);
          const inWindow = now - since < windowMs;
          if (!inWindow) {
            log?.warn({ ...ctx, sinceMs: now - since }, 'Azure AD has no matching federated identity credential (past the propagation window)');
            throw new TokenError('upstream', `Azure AD refused the exchange for ${subject}: ${aad.code} no matching federated identity record`, {
              ...(aad.status === undefined ? {} : { status: aad.status }),
              cause: err,
              publicMessage: NO_CREDENTIAL_MESSAGE,
            });
          }
          if (now - started + retryMs > maxWaitMs) {
            log?.info({ ...ctx, waitedMs: now - started }, 'federated credential still propagating; answering 503 so the client retries');
            throw new TokenError('unavailable', `federated credential for ${subject} still propagating at Azure AD (${aad.code})`, {
              cause: err,
              retryAfterMs: retryMs,
              publicMessage: PROPAGATING_MESSAGE,
            });
          }
          log?.debug({ ...ctx, attempt }, 'federated credential propagating; retrying the exchange');
          await clock.sleep(retryMs);
        }
      }
    },
  };
}

async function mintServiceAccountToken(port: ServiceAccountTokenPort, pod: FederatedPod, log: Logger | undefined): Promise<string> {
  try {
    return await port.request(pod, FEDERATED_AUDIENCE, SERVICE_ACCOUNT_TOKEN_SECONDS);
  } catch (cause) {
    const status = statusOf(cause);
    const ctx = { pod: pod.name, namespace: pod.namespace, serviceAccount: pod.serviceAccountName, status };
    if (status === 403) {
      log?.error(ctx, 'TokenRequest forbidden: NMI needs create on serviceaccounts/token (the chart grants it when federated mode is on)');
      throw new TokenError('unavailable', `TokenRequest for ${pod.namespace}/${pod.serviceAccountName} forbidden to NMI`, { cause, publicMessage: SA_TOKEN_MESSAGE });
    }
    if (status === 400 || status === 404 || status === 409 || status === 422) {
      // The pod is gone, was recreated (uid), or runs under another service account: it is not the pod we think.
      log?.warn({ ...ctx, err: errorText(cause) }, 'TokenRequest refused for the pod; no token');
      throw new TokenError('refused', `TokenRequest refused for pod ${pod.namespace}/${pod.name}: ${errorText(cause)}`, { cause, publicMessage: SA_TOKEN_MESSAGE });
    }
    log?.warn({ ...ctx, err: errorText(cause) }, 'TokenRequest failed');
    throw new TokenError('unavailable', `TokenRequest for pod ${pod.namespace}/${pod.name} failed: ${errorText(cause)}`, { cause, publicMessage: SA_TOKEN_MESSAGE });
  }
}

interface AadError {
  readonly code: string;
  readonly number: number;
  readonly status: number | undefined;
}

/** The AADSTS code of an error acquire() classified as Azure AD's answer, if its body carries one. */
function aadErrorOf(err: unknown): AadError | undefined {
  if (!(err instanceof TokenError) || err.kind !== 'upstream' || err.body === undefined) return undefined;
  let n: number | undefined;
  try {
    const body: unknown = JSON.parse(err.body);
    const codes = typeof body === 'object' && body !== null ? (body as Record<string, unknown>)['error_codes'] : undefined;
    if (Array.isArray(codes) && typeof codes[0] === 'number') n = codes[0];
    const description = typeof body === 'object' && body !== null ? (body as Record<string, unknown>)['error_description'] : undefined;
    if (n === undefined && typeof description === 'string') n = Number(/AADSTS(\d+)/.exec(description)?.[1] ?? NaN);
  } catch {
    n = Number(/AADSTS(\d+)/.exec(err.body)?.[1] ?? NaN);
  }
  if (n === undefined || !Number.isFinite(n)) return undefined;
  return { code: `AADSTS${n}`, number: n, status: err.status };
}

/** Everything but propagation: one TokenError with a pod-safe message; Azure AD's body stays out of it. */
function classify(err: unknown, aad: AadError | undefined, log: Logger | undefined, ctx: Record<string, unknown>): TokenError {
  if (err instanceof TokenError && err.kind !== 'upstream') {
    // TokenRequest failures and transport errors are already classified and logged where they happened.
    if (err.publicMessage === SA_TOKEN_MESSAGE) return err;
    log?.warn({ ...ctx, err: err.message }, 'federated token exchange failed');
    return new TokenError(err.kind, err.message, {
      cause: err,
      publicMessage: GENERIC_FAILURE_MESSAGE,
      ...(err.retryAfterMs === undefined ? {} : { retryAfterMs: err.retryAfterMs }),
    });
  }
  const status = err instanceof TokenError ? err.status : undefined;
  if (aad?.number === ISSUER_UNREACHABLE || (status !== undefined && (status >= 500 || status === 429))) {
    log?.warn({ ...ctx, status }, 'Azure AD could not complete the exchange (issuer unreachable or Azure AD unavailable)');
    return new TokenError('unavailable', `Azure AD could not complete the exchange${aad ? ` (${aad.code})` : ''}`, {
      cause: err,
      publicMessage: GENERIC_FAILURE_MESSAGE,
    });
  }
  log?.warn({ ...ctx, status }, 'Azure AD refused the federated token exchange');
  return new TokenError('upstream', `Azure AD refused the exchange${aad ? ` (${aad.code})` : ''}`, {
    ...(status === undefined ? {} : { status }),
    cause: err,
    publicMessage: REFUSED_MESSAGE,
  });
}

function statusOf(err: unknown): number | undefined {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'number' ? code : undefined;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
