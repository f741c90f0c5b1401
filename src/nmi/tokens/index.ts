// TokenProvider: what NMI's handlers call. Picks the token source for the identity type and goes through the cache.
import type { Logger } from 'pino';
import { TokenCache, type TokenCacheOptions, type TokenCacheStats } from './cache.js';
import { createImdsClient, type ImdsClient, type ImdsClientOptions, type ImdsIdentitySelector } from './imds.js';
import {
  createServicePrincipalTokenSource,
  type ServicePrincipalOptions,
  type ServicePrincipalTokenSource,
} from './service-principal.js';
import type { SecretReader } from './secrets.js';
import { federatedCacheKey, type FederatedPod, type FederatedTokenSource } from './federated.js';
import { nodeIdentityCacheKey, TokenError, type Token, type TokenRequestIdentity } from './types.js';

export interface TokenProviderOptions {
  /** IMDS as NMI reaches it (NMI's own traffic is not redirected to itself). */
  readonly imds: ImdsClientOptions;
  readonly secrets: SecretReader;
  readonly servicePrincipal?: Omit<ServicePrincipalOptions, 'secrets' | 'logger'>;
  readonly cache?: Omit<TokenCacheOptions, 'logger'>;
  /**
   * Fetch user-assigned identities by their resource ID (msi_res_id) and refuse a token whose client_id is not the
   * identity's declared clientID (never cached). Off: by clientID, as the original.
   */
  readonly verifyManagedIdentity?: boolean;
  /** Called after every call to IMDS or AAD (cache misses and refreshes; never for a hit), for the original's metrics. */
  readonly onUpstream?: UpstreamObserver;
  /** Federated identities' tokens (`--enable-federated-identities`); absent: a federated request is refused. */
  readonly federated?: FederatedTokenSource;
  readonly logger?: Logger;
}

/** The original's `operation_type` values of `aadpodidentity_imds_operations_*` (its adal helper that made the call). */
export type UpstreamOperation = 'adal_token_msi' | 'adal_token_msi_userassignedid' | 'adal_token';

export type UpstreamObserver = (operation: UpstreamOperation, seconds: number, failed: boolean) => void;

export interface NodeIdentitySelector {
  readonly clientId?: string;
  readonly resourceId?: string;
  readonly objectId?: string;
}

export interface GetTokensOptions {
  /** The client_id the pod asked for; type-0 tokens are always for the identity's own client id (as the original). */
  readonly requestedClientId?: string;
  /** Who asks (a pod's uid): a cache miss it starts is charged to its per-pod miss limit. */
  readonly caller?: string;
  /**
   * A Federated identity: the calling pod (on this node, as NMI's pod index places it), whose service account's
   * token is exchanged; cached per (identity, service account, resource).
   */
  readonly federatedPod?: FederatedPod;
}

export interface TokenProvider {
  /** One token, or for a multi-tenant service principal the primary then one per auxiliary tenant. */
  getTokens(identity: TokenRequestIdentity, resource: string, opts?: GetTokensOptions): Promise<readonly Token[]>;
  /** The tokens `getTokens` would answer from the cache right now, or undefined (never waits, never fetches). */
  peekTokens(identity: TokenRequestIdentity, resource: string, federatedPod?: FederatedPod): readonly Token[] | undefined;
  /**
   * The node's own identity (exception path): a user-assigned identity by client id or resource id, or IMDS's default
   * (the system-assigned identity, or the only user-assigned one). `vet` runs on a fetched token before it is cached:
   * the error it returns is thrown instead and nothing is cached. `caller` pays for a cache miss it starts.
   */
  getNodeToken(
    resource: string,
    identity?: NodeIdentitySelector,
    opts?: { vet?: (token: Token) => Error | undefined; caller?: string },
  ): Promise<Token>;
  /** Drop every cached node-identity token. */
  invalidateNodeTokens(): number;
  /** Fetch ahead of the first request (e.g. when an identity is assigned to a pod on this node). Never rejects. */
  prefetch(identity: TokenRequestIdentity, resource: string): Promise<void>;
  /** Drop the tokens of one exact identity key. */
  invalidate(identityKey: string): number;
  /** Drop the tokens of every version of the AzureIdentity namespace/name (changed or deleted). */
  invalidateIdentity(namespace: string, name: string): number;
  stats(): TokenCacheStats;
  /** Start/stop the background refresh timer. */
  start(refreshIntervalMs: number): void;
  stop(): void;
}

export function createTokenProvider(opts: TokenProviderOptions): TokenProvider {
  const log = opts.logger;
  const imds = createImdsClient(opts.imds);
  const sp = createServicePrincipalTokenSource({
    ...opts.servicePrincipal,
    secrets: opts.secrets,
    ...(log ? { logger: log } : {}),
  });
  const cache = new TokenCache({ ...opts.cache, ...(log ? { logger: log } : {}) });

  const verify = opts.verifyManagedIdentity === true;
  const observe = opts.onUpstream;
  const timed = <T>(operation: UpstreamOperation, call: () => Promise<T>): Promise<T> => {
    if (observe === undefined) return call();
    const started = performance.now();
    return call().then(
      (value) => {
        observe(operation, (performance.now() - started) / 1000, false);
        return value;
      },
      (err: unknown) => {
        // Refused or unusable before any call went out (policy, a bad Secret): not an IMDS/AAD operation.
        if (!(err instanceof TokenError && (err.kind === 'refused' || err.kind === 'invalid'))) {
          observe(operation, (performance.now() - started) / 1000, true);
        }
        throw err;
      },
    );
  };
  const federated = opts.federated;
  // The pod's service-account token is minted afresh inside each fetch (never kept): a refresh mints a new one for
  // the pod that last started the fetch, which runs as the same service account as every pod sharing the entry.
  const federatedFetcher = (identity: TokenRequestIdentity, resource: string, pod: FederatedPod) => () => {
    if (federated === undefined) {
      return Promise.reject(new TokenError('refused', 'federated identities are not enabled on this NMI (--enable-federated-identities)'));
    }
    return timed('adal_token', async () => [await federated.getToken(identity, resource, pod)]);
  };
  const fetcherFor = (identity: TokenRequestIdentity, resource: string) => () =>
    timed(identity.type === 0 ? 'adal_token_msi_userassignedid' : 'adal_token', () =>
      verify && identity.type === 0 ? verifiedManagedIdentityToken(imds, identity, resource) : fetchTokens(imds, sp, identity, resource),
    );

  return {
    getTokens(identity, resource, getOpts = {}) {
      const requested = getOpts.requestedClientId;
      if (identity.type === 0 && requested && requested !== identity.clientID) {
        // The original logged this and still used the identity's client id; the pod gets the identity it was matched to.
        log?.warn({ identity: identity.cacheKey }, 'requested client id differs from the identity; using the identity');
      }
      const pod = getOpts.federatedPod;
      if (pod !== undefined) return cache.get(federatedCacheKey(identity.cacheKey, pod), resource, federatedFetcher(identity, resource, pod), getOpts.caller);
      return cache.get(identity.cacheKey, resource, fetcherFor(identity, resource), getOpts.caller);
    },
    peekTokens(identity, resource, pod) {
      if (pod !== undefined) return cache.peek(federatedCacheKey(identity.cacheKey, pod), resource, federatedFetcher(identity, resource, pod));
      return cache.peek(identity.cacheKey, resource, fetcherFor(identity, resource));
    },
    async getNodeToken(resource, identity = {}, nodeOpts = {}) {
      const selector: ImdsIdentitySelector = identity.clientId
        ? { clientId: identity.clientId }
        : identity.resourceId
          ? { resourceId: identity.resourceId }
          : identity.objectId
            ? { objectId: identity.objectId }
            : {};
      const tokens = await cache.get(nodeIdentityCacheKey(selector), resource, async () => {
        const operation = identity.clientId || identity.resourceId ? 'adal_token_msi_userassignedid' : 'adal_token_msi';
        const token = await timed(operation, () => imds.getToken(resource, selector));
        const refused = nodeOpts.vet?.(token);
        if (refused !== undefined) throw refused;
        return [token];
      }, nodeOpts.caller);
      const first = tokens[0];
      if (!first) throw new TokenError('unavailable', 'IMDS returned no token for the node identity');
      return first;
    },
    prefetch(identity, resource) {
      return cache.prefetch(identity.cacheKey, resource, fetcherFor(identity, resource));
    },
    invalidate: (identityKey) => cache.invalidate(identityKey),
    invalidateNodeTokens: () => cache.invalidateWhere((k) => k.startsWith('node:')),
    invalidateIdentity(namespace, name) {
      const prefix = `${namespace}/${name}@`;
      return cache.invalidateWhere((k) => k.startsWith(prefix));
    },
    stats: () => cache.stats(),
    start: (ms) => cache.start(ms),
    stop: () => cache.stop(),
  };
}

/**
 * A user-assigned identity's token asked for by resource ID, accepted only when IMDS says it is for the declared
 * client ID: a tenant that wrote a permitted resource ID with another identity's client ID gets nothing.
 */
async function verifiedManagedIdentityToken(imds: ImdsClient, identity: TokenRequestIdentity, resource: string): Promise<readonly Token[]> {
  if (!identity.resourceID) throw new TokenError('invalid', 'managed identity has no resourceID to ask IMDS for');
  const token = await imds.getToken(resource, { resourceId: identity.resourceID });
  if (token.clientId === undefined || token.clientId.toLowerCase() !== identity.clientID.trim().toLowerCase()) {
    throw new TokenError(
      'upstream',
      "IMDS issued the token of the identity's resource ID for another client ID than the AzureIdentity's spec.clientID: refused",
    );
  }
  return [token];
}

async function fetchTokens(
  imds: ImdsClient,
  sp: ServicePrincipalTokenSource,
  identity: TokenRequestIdentity,
  resource: string,
): Promise<readonly Token[]> {
  switch (identity.type) {
    case 0: {
      if (identity.clientID) return [await imds.getToken(resource, { clientId: identity.clientID })];
      if (identity.resourceID) return [await imds.getToken(resource, { resourceId: identity.resourceID })];
      throw new TokenError('invalid', 'managed identity has neither clientID nor resourceID');
    }
    case 1:
    case 2:
      return sp.getTokens(identity, resource);
    default: {
      const unknownType: never = identity.type;
      throw new TokenError('invalid', `unsupported identity type ${String(unknownType)}`);
    }
  }
}

export { TokenCache, refreshPoint } from './cache.js';
export type { TokenCacheOptions, TokenCacheStats, TokenFetcher } from './cache.js';
export { PerCallerMissLimit } from './miss-limit.js';
export type { MissLimitOptions } from './miss-limit.js';
export { createImdsClient, parseImdsTokenBody, imdsTokenUrl, isRetryableStatus, parseRetryAfter } from './imds.js';
export type { ImdsClient, ImdsClientOptions, ImdsIdentitySelector } from './imds.js';
export { createServicePrincipalTokenSource, scopeForResource, DEFAULT_AUTHORITY } from './service-principal.js';
export type { ServicePrincipalOptions, ServicePrincipalTokenSource } from './service-principal.js';
export { countingSecretReader, kubeSecretReader, selectClientSecret, selectCertificate } from './secrets.js';
export type { SecretReader, SecretApi } from './secrets.js';
export { pkcs12ToPem } from './pkcs12.js';
export { tokenRequestIdentityFrom } from './identity.js';
export { createFederatedTokenSource, federatedCacheKey, kubeServiceAccountTokenPort } from './federated.js';
export type { FederatedPod, FederatedTokenSource, ServiceAccountTokenPort } from './federated.js';
export {
  TokenError,
  tokenErrorHttpStatus,
  tokenErrorIsIdentityNotFound,
  tokenErrorPublicMessage,
  GENERIC_CREDENTIAL_MESSAGE,
  tokenErrorRetryAfterSeconds,
  identityCacheKey,
  nodeIdentityCacheKey,
} from './types.js';
export type { IdentityType, SecretRef, Token, TokenErrorKind, TokenRequestIdentity } from './types.js';
