// The thin layer over @azure/arm-compute: GET a VM/VMSS into our IdentityState, PATCH its identity block and
// wait for the long-running operation. No retries here (the SDK's are switched off): the target's worker owns them.
import type { TokenCredential } from '@azure/core-auth';
import { ComputeManagementClient, type UserAssignedIdentitiesValue } from '@azure/arm-compute';
import { canonicalResourceId } from '../../azure/resource-id.js';
import type { AttachedIdentity, IdentityPatch, IdentityState } from './delta.js';

export interface ArmTarget {
  readonly kind: 'vm' | 'vmss';
  readonly name: string;
  /** Defaults to the client's resource group (the original used azure.json's resourceGroup for every node). */
  readonly resourceGroup?: string;
}

/** The two calls MIC makes on a VM/VMSS. Tests may implement it in memory. */
export interface ComputeIdentityPort {
  get(target: ArmTarget): Promise<IdentityState>;
  /** Resolves with the resource's identities as the finished update returned them, when it returned them. */
  patch(target: ArmTarget, patch: IdentityPatch): Promise<IdentityState | void>;
}

export interface ComputePortOptions {
  readonly credential: TokenCredential;
  readonly subscriptionId: string;
  readonly resourceGroup: string;
  /** ARM base URL (https). */
  readonly endpoint: string;
  /** Token scope; compute defaults to the public cloud's, which is wrong for sovereign clouds. */
  readonly scope?: string;
  /** LRO poll interval (the SDK default is 2 s). */
  readonly pollIntervalMs: number;
  /** Extra CA to trust (the emulator's). */
  readonly caPem?: string;
}

export function computeIdentityPort(opts: ComputePortOptions): ComputeIdentityPort {
  const client = new ComputeManagementClient(opts.credential, opts.subscriptionId, {
    endpoint: opts.endpoint,
    credentials: { scopes: [opts.scope ?? 'https://management.azure.com/.default'] },
    // Throttling and retries are decided in one place (worker.ts and batch.ts), with Retry-After gating per target.
    retryOptions: { maxRetries: 0 },
    ...(opts.caPem ? { tlsOptions: { ca: opts.caPem } } : {}),
  });
  const rg = (t: ArmTarget): string => t.resourceGroup ?? opts.resourceGroup;
  const lro = { updateIntervalInMs: opts.pollIntervalMs };

  return {
    async get(target) {
      const resource =
        target.kind === 'vm'
          ? await client.virtualMachines.get(rg(target), target.name)
          : await client.virtualMachineScaleSets.get(rg(target), target.name);
      return toIdentityState(resource.identity, resource.provisioningState);
    },
    async patch(target, patch) {
      const identity = {
        type: patch.type,
        ...(patch.userAssignedIdentities ? { userAssignedIdentities: toSdkMap(patch.userAssignedIdentities) } : {}),
      };
      const updated =
        target.kind === 'vm'
          ? await client.virtualMachines.update(rg(target), target.name, { identity }, lro).pollUntilDone()
          : await client.virtualMachineScaleSets.update(rg(target), target.name, { identity }, lro).pollUntilDone();
      // The updated resource carries each identity's client and principal IDs: no extra GET to learn them.
      return updated?.identity === undefined ? undefined : toIdentityState(updated.identity, updated.provisioningState);
    },
  };
}

/** SDK model → our state (compute 24.x flattens `properties`, so provisioningState is top-level). */
export function toIdentityState(
  identity: { type?: string; userAssignedIdentities?: Record<string, UserAssignedIdentitiesValue | null> } | undefined,
  provisioningState: string | undefined,
): IdentityState {
  const userAssigned = new Map<string, AttachedIdentity>();
  for (const [id, value] of Object.entries(identity?.userAssignedIdentities ?? {})) {
    const clientId = value?.clientId;
    const principalId = value?.principalId;
    userAssigned.set(canonicalResourceId(id), { id, ...(clientId ? { clientId } : {}), ...(principalId ? { principalId } : {}) });
  }
  return {
    type: identity?.type ?? '',
    userAssigned,
    ...(provisioningState !== undefined ? { provisioningState } : {}),
  };
}

// The SDK types forbid null, but its serializer keeps it and ARM reads null as "detach" (sdk-notes §4).
function toSdkMap(map: Readonly<Record<string, Record<string, never> | null>>): Record<string, UserAssignedIdentitiesValue> {
  const out: Record<string, UserAssignedIdentitiesValue> = {};
  for (const [id, v] of Object.entries(map)) out[id] = v === null ? (null as unknown as UserAssignedIdentitiesValue) : {};
  return out;
}
