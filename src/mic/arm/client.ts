// Builds the ARM side of MIC: the compute port (over @azure/arm-compute, or one a test supplies) under one worker
// per VM/VMSS (worker.ts). What a caller gets is both the workers MIC's executor drives and a one-shot
// ArmIdentityClient (apply/getIdentities) for tools and tests.
import type { TokenCredential } from '@azure/core-auth';
import { type ComputeIdentityPort, computeIdentityPort } from './compute.js';
import { ArmWorkers, type ArmWorkersOptions } from './worker.js';

export interface ArmIdentityClientOptions extends Omit<ArmWorkersOptions, 'port'> {
  /** ARM access; or pass `port` to supply the compute calls directly. */
  readonly credential?: TokenCredential;
  readonly subscriptionId?: string;
  readonly resourceGroup?: string;
  readonly endpoint?: string;
  /** Token scope, `${armAudience}/.default`; default the public cloud's. */
  readonly scope?: string;
  /** Extra CA to trust for ARM (the emulator's). */
  readonly caPem?: string;
  readonly port?: ComputeIdentityPort;
  /** LRO poll interval. Default 5000 (the original's PollingDelay). */
  readonly pollIntervalMs?: number;
}

export function createArmIdentityClient(opts: ArmIdentityClientOptions): ArmWorkers {
  return new ArmWorkers({ ...opts, port: opts.port ?? defaultPort(opts) });
}

function defaultPort(opts: ArmIdentityClientOptions): ComputeIdentityPort {
  const { credential, subscriptionId, resourceGroup, endpoint } = opts;
  if (!credential || !subscriptionId || !resourceGroup || !endpoint) {
    throw new Error('createArmIdentityClient: pass either `port` or all of credential, subscriptionId, resourceGroup, endpoint');
  }
  return computeIdentityPort({
    credential,
    subscriptionId,
    resourceGroup,
    endpoint,
    pollIntervalMs: opts.pollIntervalMs ?? 5000,
    ...(opts.scope ? { scope: opts.scope } : {}),
    ...(opts.caPem ? { caPem: opts.caPem } : {}),
  });
}
