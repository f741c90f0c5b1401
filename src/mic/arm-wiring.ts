// How MIC's flags and cloud config become its ARM client: one place, used by cmd/mic.ts and by the tests that run
// MIC in-process, so what the tests exercise is what the binary builds.

import type { TokenCredential } from '@azure/identity';
import type { Logger } from 'pino';
import type { AzureCloudConfig } from '../azure/cloud-config.js';
import { createArmIdentityClient } from './arm.js';
import type { MicConfig } from './config.js';
import type { ArmCallObserver } from './mic.js';
import type { ArmPort } from './ports.js';

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

export function armClientFactory(w: ArmWiring): (onCall: ArmCallObserver) => ArmPort {
  return (onCall) =>
    createArmIdentityClient({
      credential: w.credential,
      subscriptionId: w.cloud.subscriptionId,
      resourceGroup: w.cloud.resourceGroup,
      endpoint: w.cloud.environment.resourceManagerEndpoint,
      scope: `${w.cloud.environment.resourceManagerAudience}/.default`,
      ...(w.caPem !== undefined ? { caPem: w.caPem } : {}),
      logger: w.logger.child({ component: 'arm' }),
      immutableIdentities: [...w.config.immutableUserMsis, ...(w.clusterIdentityClientId ? [w.clusterIdentityClientId] : [])],
      maxConcurrency: w.config.armMaxConcurrency,
      maxRetries: w.config.updateUserMsiMaxRetry,
      retryIntervalMs: w.config.updateUserMsiRetryIntervalMs,
      pollIntervalMs: w.config.armPollIntervalMs,
      ...(w.maxThrottleWaitMs !== undefined ? { maxThrottleWaitMs: w.maxThrottleWaitMs } : {}),
      onCall,
    });
}
