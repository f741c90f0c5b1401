// The TokenCredential MIC uses against ARM: a service principal or a managed identity, as azure.json says,
// with a deadline on every getToken (the SDK's managed-identity path has none and ignores abortSignal).
import type { AccessToken, GetTokenOptions, TokenCredential } from '@azure/core-auth';
import {
  createDefaultHttpClient,
  type HttpClient,
  type PipelineRequest,
  type PipelineResponse,
} from '@azure/core-rest-pipeline';
import { ClientSecretCredential, ManagedIdentityCredential } from '@azure/identity';
import type { AzureCloudConfig } from './cloud-config.js';

export interface ArmCredentialOptions {
  /** Extra CA (PEM) to trust for AAD/IMDS, e.g. the emulator's. Real clouds need none. */
  readonly caPem?: string;
  /** Deadline for one getToken, default 30 s. */
  readonly tokenTimeoutMs?: number;
}

export class TokenTimeoutError extends Error {
  override readonly name = 'TokenTimeoutError';
}

const IMDS_ORIGIN = 'http://169.254.169.254';

/** Builds the ARM credential the cloud config asks for. */
export function armCredential(config: AzureCloudConfig, options: ArmCredentialOptions = {}): TokenCredential {
  const env = config.environment;
  const tls = options.caPem ? { tlsOptions: { ca: options.caPem } } : {};
  let inner: TokenCredential;
  switch (config.auth.kind) {
    case 'servicePrincipal':
      inner = new ClientSecretCredential(config.tenantId, config.auth.clientId, config.auth.clientSecret, {
        authorityHost: env.activeDirectoryEndpoint,
        // Instance discovery calls the public cloud; elsewhere (sovereign, stack, emulator) it only hangs and fails.
        disableInstanceDiscovery: !env.isPublicCloud,
        ...tls,
      });
      break;
    case 'managedIdentity': {
      const httpClient = env.imdsEndpoint ? redirectingHttpClient(IMDS_ORIGIN, env.imdsEndpoint) : undefined;
      const common = { ...(httpClient ? { httpClient } : {}), ...tls };
      inner = config.auth.userAssignedIdentityId
        ? new ManagedIdentityCredential({ clientId: config.auth.userAssignedIdentityId, ...common })
        : new ManagedIdentityCredential(common);
      break;
    }
  }
  return withTokenTimeout(inner, options.tokenTimeoutMs ?? 30_000);
}

/** Wraps a credential so that every getToken settles within `timeoutMs`. */
export function withTokenTimeout(credential: TokenCredential, timeoutMs: number): TokenCredential {
  return {
    async getToken(scopes: string | string[], options?: GetTokenOptions): Promise<AccessToken | null> {
      const controller = new AbortController();
      const outer = options?.abortSignal;
      const onOuterAbort = (): void => controller.abort();
      outer?.addEventListener('abort', onOuterAbort, { once: true });
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          controller.abort();
          reject(new TokenTimeoutError(`getToken for ${String(scopes)} did not finish within ${timeoutMs} ms`));
        }, timeoutMs);
        timer.unref();
      });
      try {
        return await Promise.race([credential.getToken(scopes, { ...options, abortSignal: controller.signal }), deadline]);
      } finally {
        clearTimeout(timer);
        outer?.removeEventListener('abort', onOuterAbort);
      }
    },
  };
}

/**
 * An HttpClient that sends requests for `fromOrigin` to `toBase` instead: the managed-identity credential has no
 * endpoint option, and the env-var route is process-global.
 */
export function redirectingHttpClient(fromOrigin: string, toBase: string, inner: HttpClient = createDefaultHttpClient()): HttpClient {
  const to = toBase.replace(/\/+$/, '');
  return {
    sendRequest(request: PipelineRequest): Promise<PipelineResponse> {
      if (request.url.startsWith(fromOrigin)) request.url = to + request.url.slice(fromOrigin.length);
      return inner.sendRequest(request);
    },
  };
}
