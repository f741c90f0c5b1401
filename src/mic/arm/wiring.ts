// How MIC's flags and cloud config become its ARM client: one place, used by cmd/mic.ts and by the tests that run
// MIC in-process, so what the tests exercise is what the binary builds.
//
// The client survives a new azure.json: reload() swaps the compute client underneath it (new credential, so no
// token of the old principal stays cached; new subscription, resource group or endpoint) while the per-target
// workers, their coalescing and the Retry-After gates above it stay. A call already sent finishes on the old compute client.

import type { TokenCredential } from '@azure/identity';
import type { Logger } from 'pino';
import { cloudConfigChanges, type AzureCloudConfig } from '../../azure/cloud-config.js';
import type { MicConfig } from '../config.js';
import type { ArmCallObserver } from '../mic.js';
import type { ArmPort } from '../ports.js';
import { createArmIdentityClient } from './client.js';
import { computeIdentityPort, type ComputeIdentityPort } from './compute.js';
import { msiFederatedCredentialPort, type FederatedCredentialPort } from '../federation/credentials.js';

export interface ArmWiring {
  readonly config: MicConfig;
  readonly cloud: AzureCloudConfig;
  readonly credential: TokenCredential;
  readonly logger: Logger;
  /** The cluster's own identity (azure.json userAssignedIdentityID): never detached, as the original. */
  readonly clusterIdentityClientId?: string;
  /** Extra CA for the ARM endpoint (an emulator's); real clouds need none. */
  readonly caPem?: string;
  /** Longest Retry-After MIC waits in-line before giving the target back to the queue. */
  readonly maxThrottleWaitMs?: number;
}

export interface ReloadableArmWiring extends ArmWiring {
  /** Builds the credential for a new cloud config (armCredential in production). */
  readonly credentialFor: (cloud: AzureCloudConfig) => TokenCredential;
}

export interface ReloadableArm {
  /** What startMic takes as `armClient`. */
  readonly factory: ArmFactory;
  /**
   * Federated identity credential writes through @azure/arm-msi, with the same ARM credential, endpoint, audience
   * and CA as the compute client (and swapped with it on reload).
   */
  readonly federatedCredentials: FederatedCredentialPort;
  /** The cloud config now in force. */
  current(): AzureCloudConfig;
  /** Makes `next` live for every later ARM call; returns the azure.json keys that changed (empty: nothing done). */
  reload(next: AzureCloudConfig): string[];
}

/** What startMic takes as `armClient`: the ARM workers, given the metrics observer and the hold backoff. */
export type ArmFactory = (onCall: ArmCallObserver, holds?: { readonly retryBaseMs?: number; readonly maxRetryDelayMs?: number }) => ArmPort;

export function armClientFactory(w: ArmWiring): ArmFactory {
  return reloadableArm({ ...w, credentialFor: () => w.credential }).factory;
}

/** The federated credential port alone, for callers that build a fixed (non-reloading) ARM client. */
export function federatedCredentialPort(w: ArmWiring): FederatedCredentialPort {
  return msiFor(w, w.cloud, w.credential);
}

/** An ARM client whose cloud config (credential, subscription, resource group, endpoints) can be replaced live. */
export function reloadableArm(w: ReloadableArmWiring): ReloadableArm {
  let cloud = w.cloud;
  // Cluster identities named by later azure.json versions: never detached either (the first one is in the fixed set).
  const laterClusterIdentities = new Set<string>();
  let compute = computeFor(w, cloud, w.credential);
  let msi = msiFor(w, cloud, w.credential);
  const federatedCredentials: FederatedCredentialPort = {
    list: (id) => msi.list(id),
    createOrUpdate: (id, c) => msi.createOrUpdate(id, c),
    delete: (id, name) => msi.delete(id, name),
  };
  const port: ComputeIdentityPort = {
    get: (target) => compute.get(target),
    patch: (target, patch) => compute.patch(target, patch),
  };
  return {
    factory: (onCall, holds = {}) =>
      createArmIdentityClient({
        ...holds,
        port,
        logger: w.logger.child({ component: 'arm' }),
        immutableIdentities: [...w.config.immutableUserMsis, ...(w.clusterIdentityClientId ? [w.clusterIdentityClientId] : [])],
        alsoImmutable: { has: (_key, clientId) => clientId !== undefined && laterClusterIdentities.has(clientId.trim().toLowerCase()) },
        maxConcurrency: w.config.armMaxConcurrency,
        maxRetries: w.config.updateUserMsiMaxRetry,
        retryIntervalMs: w.config.updateUserMsiRetryIntervalMs,
        pollIntervalMs: w.config.armPollIntervalMs,
        ...(w.maxThrottleWaitMs !== undefined ? { maxThrottleWaitMs: w.maxThrottleWaitMs } : {}),
        onCall,
      }),
    federatedCredentials,
    current: () => cloud,
    reload(next) {
      const changes = cloudConfigChanges(cloud, next);
      if (changes.length === 0) return changes;
      // Build first: if the credential cannot be made, the old config stays in force (the caller reports it).
      const nextCredential = w.credentialFor(next);
      const nextCompute = computeFor(w, next, nextCredential);
      compute = nextCompute;
      msi = msiFor(w, next, nextCredential);
      cloud = next;
      const cluster = clusterIdentityOf(next);
      if (cluster !== undefined) laterClusterIdentities.add(cluster.toLowerCase());
      return changes;
    },
  };
}

/** azure.json's userAssignedIdentityID: the identity MIC itself runs as, which it must never detach. */
export function clusterIdentityOf(cloud: AzureCloudConfig): string | undefined {
  return cloud.auth.kind === 'managedIdentity' && cloud.auth.userAssignedIdentityId ? cloud.auth.userAssignedIdentityId : undefined;
}

function computeFor(w: ArmWiring, cloud: AzureCloudConfig, credential: TokenCredential): ComputeIdentityPort {
  return computeIdentityPort({
    credential,
    subscriptionId: cloud.subscriptionId,
    resourceGroup: cloud.resourceGroup,
    endpoint: cloud.environment.resourceManagerEndpoint,
    scope: `${cloud.environment.resourceManagerAudience}/.default`,
    pollIntervalMs: w.config.armPollIntervalMs,
    ...(w.caPem !== undefined ? { caPem: w.caPem } : {}),
  });
}

function msiFor(w: ArmWiring, cloud: AzureCloudConfig, credential: TokenCredential): FederatedCredentialPort {
  return msiFederatedCredentialPort({
    credential,
    endpoint: cloud.environment.resourceManagerEndpoint,
    scope: `${cloud.environment.resourceManagerAudience}/.default`,
    ...(w.caPem !== undefined ? { caPem: w.caPem } : {}),
  });
}
