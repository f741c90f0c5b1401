/**
 * Test helper: start the Azure emulator and build real SDK clients and credentials pointed at it.
 *
 * The emulator speaks HTTPS with its own CA. Clients here get the CA through the SDKs' `tlsOptions`, so no
 * NODE_EXTRA_CA_CERTS is needed in the test process (a child process can use `emulator.caFile` with it instead).
 */
import { randomUUID } from 'node:crypto';
import type { AccessToken, TokenCredential } from '@azure/core-auth';
import { ComputeManagementClient } from '@azure/arm-compute';
import { ManagedServiceIdentityClient } from '@azure/arm-msi';
import { ClientAssertionCredential, ClientSecretCredential } from '@azure/identity';
import { ServiceClient } from '@azure/core-client';
import { createHttpHeaders, createPipelineRequest } from '@azure/core-rest-pipeline';
import { parseCloudConfig, type AzureCloudConfig } from '../../src/azure/cloud-config.js';
import { startAzureEmulator, type AzureEmulator, type AzureEmulatorOptions } from '../../src/sandbox/cloud/index.js';

export { decodeToken } from '../../src/sandbox/cloud/index.js';
export type { AzureEmulator } from '../../src/sandbox/cloud/index.js';

export const ARM_SCOPE = 'https://management.azure.com/.default';

export interface TestAzure {
  readonly emulator: AzureEmulator;
  readonly resourceGroup: string;
  /** A service principal registered in the emulator's tenant, allowed to call ARM. */
  readonly servicePrincipal: { readonly clientId: string; readonly secret: string; readonly objectId: string };
  /** ClientSecretCredential of that service principal, against the emulator's AAD. */
  readonly credential: TokenCredential;
  /** `tlsOptions` to give any Azure SDK client or credential so it trusts the emulator. */
  readonly tlsOptions: { readonly ca: string };
  compute(credential?: TokenCredential): ComputeManagementClient;
  msi(credential?: TokenCredential): ManagedServiceIdentityClient;
  stop(): Promise<void>;
}

/**
 * Starts an emulator with one resource group and one service principal; `stop()` tears it all down. The service
 * principal (the cluster principal MIC runs as) holds what the docs tell an admin to grant: Virtual Machine
 * Contributor and Managed Identity Operator on the resource group (nodes and identities live in the same one here);
 * `roles: false` leaves it with none.
 */
export async function startTestAzure(opts: AzureEmulatorOptions & { resourceGroup?: string; roles?: boolean } = {}): Promise<TestAzure> {
  const emulator = await startAzureEmulator(opts);
  const resourceGroup = opts.resourceGroup ?? 'rg-test';
  const group = emulator.createResourceGroup(resourceGroup);
  const secret = `secret-${randomUUID()}`;
  const sp = emulator.registerServicePrincipal({ clientId: randomUUID(), secret });
  if (opts.roles !== false) grantClusterRoles(emulator, sp.objectId, group.id);
  const credential = emulatorSecretCredential(emulator, sp.clientId, secret);
  return {
    emulator,
    resourceGroup,
    servicePrincipal: { clientId: sp.clientId, secret, objectId: sp.objectId },
    credential,
    tlsOptions: { ca: emulator.caPem },
    compute: (c = credential) => computeClient(emulator, c),
    msi: (c = credential) => msiClient(emulator, c),
    stop: () => emulator.stop(),
  };
}

/** What the docs tell an admin to grant the cluster principal: VM Contributor on the nodes' RG, MI Operator on the identities'. */
export function grantClusterRoles(emulator: AzureEmulator, principal: string, nodeGroupId: string, identityGroupId = nodeGroupId): void {
  emulator.grantRole(principal, 'Virtual Machine Contributor', nodeGroupId);
  emulator.grantRole(principal, 'Managed Identity Operator', identityGroupId);
}

/** The cloud config MIC reads from an azure.json naming `az`'s service principal, with ARM and AAD at the emulator. */
export function servicePrincipalCloudConfig(az: TestAzure): AzureCloudConfig {
  const e = az.emulator;
  return parseCloudConfig({
    fileText: JSON.stringify({
      cloud: 'AzurePublicCloud',
      tenantId: e.tenantId,
      aadClientId: az.servicePrincipal.clientId,
      aadClientSecret: az.servicePrincipal.secret,
      subscriptionId: e.subscriptionId,
      resourceGroup: az.resourceGroup,
    }),
    customEndpoints: { resourceManagerEndpoint: e.url, activeDirectoryEndpoint: e.url },
  });
}

/** ClientSecretCredential against the emulator's AAD (HTTPS authority, no instance discovery). */
export function emulatorSecretCredential(emulator: AzureEmulator, clientId: string, secret: string, tenantId = emulator.tenantId): ClientSecretCredential {
  return new ClientSecretCredential(tenantId, clientId, secret, {
    authorityHost: emulator.url,
    disableInstanceDiscovery: true,
    tlsOptions: { ca: emulator.caPem },
  });
}

/** ClientAssertionCredential against the emulator's AAD: a managed identity's client ID plus a federated assertion. */
export function emulatorAssertionCredential(
  emulator: AzureEmulator,
  clientId: string,
  getAssertion: () => Promise<string>,
  tenantId = emulator.tenantId,
): ClientAssertionCredential {
  return new ClientAssertionCredential(tenantId, clientId, getAssertion, {
    authorityHost: emulator.url,
    disableInstanceDiscovery: true,
    tlsOptions: { ca: emulator.caPem },
  });
}

/** A credential that mints ARM tokens directly from the emulator's signer (no AAD round trip in the request log). */
export function mintedArmCredential(emulator: AzureEmulator, subject: { appId?: string; objectId?: string } = {}): TokenCredential {
  const appId = subject.appId ?? randomUUID();
  const objectId = subject.objectId ?? randomUUID();
  return {
    getToken: async (): Promise<AccessToken> => {
      const t = await emulator.issueToken({ appId, objectId, audience: 'https://management.azure.com/' });
      return { token: t.accessToken, expiresOnTimestamp: t.expiresOn * 1000 };
    },
  };
}

export function computeClient(emulator: AzureEmulator, credential: TokenCredential): ComputeManagementClient {
  return new ComputeManagementClient(credential, emulator.subscriptionId, {
    endpoint: emulator.url,
    tlsOptions: { ca: emulator.caPem },
    // Tests must not wait out the SDK's default retry delays.
    retryOptions: { maxRetries: 3, retryDelayInMs: 50, maxRetryDelayInMs: 2000 },
  });
}

export function msiClient(emulator: AzureEmulator, credential: TokenCredential): ManagedServiceIdentityClient {
  return new ManagedServiceIdentityClient(credential, emulator.subscriptionId, {
    endpoint: emulator.url,
    credentialScopes: [ARM_SCOPE], // arm-msi would otherwise ask for `${endpoint}/.default`
    tlsOptions: { ca: emulator.caPem },
    retryOptions: { maxRetries: 3, retryDelayInMs: 50, maxRetryDelayInMs: 2000 },
  });
}

/** Environment for a child process whose ManagedIdentityCredential should talk to `imdsUrl`. */
export function imdsEnv(imdsUrl: string, emulator?: AzureEmulator): Record<string, string> {
  return {
    AZURE_POD_IDENTITY_AUTHORITY_HOST: imdsUrl,
    ...(emulator ? { NODE_EXTRA_CA_CERTS: emulator.caFile } : {}),
  };
}

/**
 * Raw ARM calls through the Azure SDK's own pipeline (bearer policy, retries, TLS), for APIs without an installed SDK
 * package (Microsoft.Authorization): `path` is sent as given, so SDK quirks such as `//subscriptions/...` can be replayed.
 */
export function armRest(emulator: AzureEmulator, credential: TokenCredential) {
  const client = new ServiceClient({ credential, credentialScopes: [ARM_SCOPE], endpoint: emulator.url, tlsOptions: { ca: emulator.caPem } });
  return async (method: 'GET' | 'PUT' | 'DELETE', path: string, body?: unknown): Promise<{ status: number; body: any }> => {
    const res = await client.sendRequest(
      createPipelineRequest({
        url: `${emulator.url}${path}`,
        method,
        headers: createHttpHeaders({ 'content-type': 'application/json', accept: 'application/json' }),
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      }),
    );
    return { status: res.status, body: res.bodyAsText ? JSON.parse(res.bodyAsText) : undefined };
  };
}
