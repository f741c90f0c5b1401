// Service-principal tokens (AzureIdentity type 1 = client secret, type 2 = PKCS#12 certificate) from AAD through
// @azure/identity, with the original's multi-tenant behaviour (primary token, then one per auxiliary tenant).
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import { Agent as HttpsAgent } from 'node:https';
import type { AccessToken, TokenCredential } from '@azure/core-auth';
import {
  ClientCertificateCredential,
  ClientSecretCredential,
  type ClientSecretCredentialOptions,
} from '@azure/identity';
import type { Logger } from 'pino';
import { KNOWN_CLOUD_AUTHORITIES } from '../../azure/cloud-config.js';
import { adEndpointRefusal, allowedAuthoritySet } from '../../crds/credential-policy.js';
import { pkcs12ToPem } from './pkcs12.js';
import { readSecret, selectCertificate, selectClientSecret, type SecretReader } from './secrets.js';
import { TokenError, type Token, type TokenRequestIdentity } from './types.js';
import { realClock } from '../../common/clock.js';

export const DEFAULT_AUTHORITY = 'https://login.microsoftonline.com/';

export interface ServicePrincipalOptions {
  readonly secrets: SecretReader;
  /** Authority when the identity sets no adEndpoint; an adEndpoint naming it is allowed. */
  readonly defaultAuthority?: string;
  /**
   * Authorities an identity's adEndpoint may name besides the known clouds' and the default (`--allowed-ad-endpoints`).
   * Any other adEndpoint is refused before the Secret is read or a connection is made.
   */
  readonly allowedAuthorities?: readonly string[];
  /** `--allow-cross-namespace-secrets`: read a clientPassword Secret outside the identity's namespace. */
  readonly allowCrossNamespaceSecrets?: boolean;
  /** Deadline for one token acquisition (the SDK has none of its own). */
  readonly timeoutMs?: number;
  /** Retries the SDK pipeline makes on 5xx/429/transport errors; small in tests. */
  readonly maxRetries?: number;
  /** Extra CA (PEM) to trust for the authority, e.g. the emulator's. Real clouds need none. */
  readonly caPem?: string;
  /** Most credential instances kept (each holds MSAL's token cache for one identity and secret content). */
  readonly maxCredentials?: number;
  readonly logger?: Logger;
  readonly now?: () => number;
}

export interface ServicePrincipalTokenSource {
  /** Primary-tenant token first, then one per auxiliary tenant (type 1 only, as the original). */
  getTokens(identity: TokenRequestIdentity, resource: string): Promise<Token[]>;
}

export function createServicePrincipalTokenSource(opts: ServicePrincipalOptions): ServicePrincipalTokenSource {
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const maxCredentials = Math.max(1, opts.maxCredentials ?? 1_000);
  const now = opts.now ?? realClock.now;
  const allowedAuthorities = allowedAuthoritySet([
    ...KNOWN_CLOUD_AUTHORITIES,
    opts.defaultAuthority || DEFAULT_AUTHORITY,
    ...(opts.allowedAuthorities ?? []),
  ]);
  const agent = opts.caPem ? new HttpsAgent({ ca: opts.caPem, keepAlive: true }) : undefined;
  // Credentials per (identity key, secret content): MSAL's own cache lives in the instance, so reusing it matters.
  const credentials = new Map<string, TokenCredential>();

  const credentialFor = (identity: TokenRequestIdentity, data: Record<string, Buffer>, tenant: string): TokenCredential => {
    const authorityHost = identity.adEndpoint || opts.defaultAuthority || DEFAULT_AUTHORITY;
    const key = [identity.cacheKey, tenant, authorityHost, identity.clientID, fingerprint(data)].join('\n');
    const hit = credentials.get(key);
    if (hit) {
      credentials.delete(key);
      credentials.set(key, hit);
      return hit;
    }
    const ref = identity.clientPassword ?? { name: '', namespace: '' };
    const options: ClientSecretCredentialOptions = {
      authorityHost,
      // Instance discovery asks the public cloud about the authority; custom authorities make it hang and fail.
      disableInstanceDiscovery: true,
      additionalPolicies: [{ policy: responseRecorder, position: 'perCall' }],
      ...(opts.maxRetries === undefined ? {} : { retryOptions: { maxRetries: opts.maxRetries } }),
      ...(agent ? { agent } : {}),
    };
    let credential: TokenCredential;
    if (identity.type === 1) {
      credential = construct(() => new ClientSecretCredential(tenant, identity.clientID, selectClientSecret(data, ref), options));
    } else {
      const where = `secret ${ref.namespace}/${ref.name}`;
      const { pfx, password } = selectCertificate(data, ref);
      const pem = pkcs12ToPem(pfx, password, where).pem;
      credential = construct(() => new ClientCertificateCredential(tenant, identity.clientID, { certificate: pem }, options));
    }
    credentials.set(key, credential);
    while (credentials.size > maxCredentials) {
      const oldest = credentials.keys().next();
      if (oldest.done) break;
      credentials.delete(oldest.value);
    }
    return credential;
  };

  return {
    async getTokens(identity, resource) {
      if (identity.type !== 1 && identity.type !== 2) {
        throw new TokenError('invalid', `identity type ${String(identity.type)} is not a service principal`);
      }
      if (!identity.tenantID) {
        throw new TokenError('invalid', 'service principal identity has no tenantID', { publicMessage: 'the identity has no tenantID' });
      }
      if (!identity.clientID) {
        throw new TokenError('invalid', 'service principal identity has no clientID', { publicMessage: 'the identity has no clientID' });
      }
      // Both refusals come before the Secret is read and before any connection: the tenant does not choose either.
      const authority = adEndpointRefusal(identity.adEndpoint, { allowedAuthorities });
      if (authority) throw new TokenError('refused', `identity ${identity.cacheKey} refused: ${authority.reason}`);
      const data = await readSecret(opts.secrets, identity.clientPassword, identity.namespace, opts.allowCrossNamespaceSecrets === true);
      const tenants = [identity.tenantID, ...(identity.type === 1 ? (identity.auxiliaryTenantIDs ?? []) : [])];
      const scope = scopeForResource(resource);
      const tokens: Token[] = [];
      // One after another, primary first: the original's order, and a failure stops before asking further tenants.
      for (const tenant of tenants) {
        const credential = credentialFor(identity, data, tenant);
        const access = await acquire(credential, scope, tenant, timeoutMs);
        const expiresOn = Math.floor(access.expiresOnTimestamp / 1000);
        tokens.push({
          accessToken: access.token,
          expiresOn,
          expiresIn: Math.max(0, expiresOn - Math.floor(now() / 1000)),
          resource,
          tokenType: access.tokenType ?? 'Bearer',
          clientId: identity.clientID,
        });
      }
      opts.logger?.debug({ identity: identity.cacheKey, resource, tenants: tenants.length }, 'service principal token acquired');
      return tokens;
    },
  };
}

/** AAD v2 scope for a v1-style resource: `<resource>/.default` (a trailing slash becomes `//.default`, as AAD expects). */
export function scopeForResource(resource: string): string {
  return `${resource}/.default`;
}

// What the SDK's HTTP pipeline saw during one acquisition. MSAL turns AAD's error answers and transport failures
// into the same few error classes (often without a cause), so we watch the wire to classify them.
interface WireRecord {
  status?: number;
  body?: string;
  transportError?: unknown;
}
const wire = new AsyncLocalStorage<WireRecord>();

type PipelinePolicy = NonNullable<ClientSecretCredentialOptions['additionalPolicies']>[number]['policy'];

export const responseRecorder: PipelinePolicy = {
  name: 'nmiTokenResponseRecorder',
  async sendRequest(request, next) {
    const record = wire.getStore();
    try {
      const response = await next(request);
      if (record && response.status >= 400) {
        record.status = response.status;
        if (response.bodyAsText != null) record.body = response.bodyAsText;
      }
      return response;
    } catch (err) {
      if (record) record.transportError = err;
      throw err;
    }
  },
};

/** One getToken through a credential built with `responseRecorder`, classified into TokenErrors (upstream: AAD answered). */
export async function acquire(credential: TokenCredential, scope: string, tenant: string, timeoutMs: number): Promise<AccessToken> {
  const record: WireRecord = {};
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  const call = wire.run(record, () => credential.getToken(scope, { abortSignal: controller.signal }));
  try {
    const result = await Promise.race([call, deadline]);
    if (result === 'timeout') {
      controller.abort();
      call.catch(() => undefined); // settles later, or never; nobody is waiting for it any more
      throw new TokenError('unavailable', `AAD token request for tenant ${tenant} did not finish within ${timeoutMs} ms`);
    }
    if (result === null) throw new TokenError('upstream', `AAD returned no token for tenant ${tenant}`);
    return result;
  } catch (err) {
    if (err instanceof TokenError) throw err;
    if (record.status !== undefined) {
      throw new TokenError('upstream', `AAD answered ${record.status} for tenant ${tenant}: ${errorMessage(err)}`, {
        status: record.status,
        ...(record.body === undefined ? {} : { body: record.body }),
        cause: err,
      });
    }
    throw new TokenError('unavailable', `AAD token request for tenant ${tenant} failed: ${errorMessage(err)}`, {
      cause: err,
    });
  } finally {
    clearTimeout(timer);
  }
}

/** The SDK validates its options in the constructor (e.g. an http authority); that is our input being wrong. */
function construct(make: () => TokenCredential): TokenCredential {
  try {
    return make();
  } catch (cause) {
    if (cause instanceof TokenError) throw cause;
    throw new TokenError('invalid', `cannot build the service principal credential: ${errorMessage(cause)}`, { cause });
  }
}

function fingerprint(data: Record<string, Buffer>): string {
  const h = createHash('sha256');
  for (const k of Object.keys(data).sort()) {
    h.update(k).update('\0').update(data[k] ?? Buffer.alloc(0)).update('\0');
  }
  return h.digest('hex');
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
