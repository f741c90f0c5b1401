import { parse as parseYaml } from 'yaml';
import type { AzureEmulator } from './index.js';
import type { ImdsTarget } from './imds.js';
import { isRecord } from './http.js';

/**
 * An initial world for the emulator, as the CLI's `--state-file` (JSON or YAML) describes it.
 * Identities are referred to by name (in the same resource group) or by full resource ID.
 */
export interface SeedState {
  readonly resourceGroups?: readonly string[];
  readonly identities?: readonly { readonly resourceGroup: string; readonly name: string }[];
  readonly vms?: readonly SeedCompute[];
  readonly vmss?: readonly (SeedCompute & { readonly instances: readonly string[] | number })[];
  readonly servicePrincipals?: readonly { readonly clientId: string; readonly secret?: string; readonly tenantId?: string }[];
  readonly imds?: readonly ImdsTarget[];
  /**
   * Role assignments: `principal` is an object ID or a service principal's / identity's client ID, `role` a built-in
   * role's name or GUID, `scope` a resource ID or prefix (a bare resource group name means that group).
   */
  readonly roleAssignments?: readonly { readonly principal: string; readonly role: string; readonly scope: string }[];
}

interface SeedCompute {
  readonly resourceGroup: string;
  readonly name: string;
  readonly systemAssigned?: boolean;
  readonly userAssigned?: readonly string[];
}

export interface SeedResult {
  readonly identities: readonly { id: string; name: string; clientId: string; principalId: string }[];
  readonly imds: readonly { target: ImdsTarget; url: string }[];
}

/** Parses a state file's text; throws with the offending field named. */
export function parseSeedState(text: string): SeedState {
  const value: unknown = parseYaml(text);
  if (value === null || value === undefined) return {};
  if (!isRecord(value)) throw new Error('state file: expected an object at the top level');
  for (const key of Object.keys(value)) {
    if (!['resourceGroups', 'identities', 'vms', 'vmss', 'servicePrincipals', 'imds', 'roleAssignments'].includes(key)) {
      throw new Error(`state file: unknown key '${key}'`);
    }
    if (!Array.isArray(value[key])) throw new Error(`state file: '${key}' must be a list`);
  }
  return value as SeedState;
}

/** Creates what the seed describes, in dependency order, and starts the IMDS listeners it names. */
export async function applySeedState(emulator: AzureEmulator, seed: SeedState, imdsHost?: string): Promise<SeedResult> {
  const groups = new Set<string>([
    ...(seed.resourceGroups ?? []),
    ...(seed.identities ?? []).map((i) => i.resourceGroup),
    ...(seed.vms ?? []).map((v) => v.resourceGroup),
    ...(seed.vmss ?? []).map((v) => v.resourceGroup),
  ]);
  for (const rg of groups) emulator.createResourceGroup(rg);
  const identities = (seed.identities ?? []).map((i) => emulator.createUserAssignedIdentity(i.resourceGroup, i.name));
  const resolve = (rg: string, ref: string): string =>
    ref.startsWith('/') ? ref : `/subscriptions/${emulator.subscriptionId}/resourcegroups/${rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/${ref}`;
  for (const vm of seed.vms ?? []) {
    emulator.createVm(vm.resourceGroup, vm.name, {
      systemAssigned: vm.systemAssigned ?? false,
      userAssigned: (vm.userAssigned ?? []).map((r) => resolve(vm.resourceGroup, r)),
    });
  }
  for (const ss of seed.vmss ?? []) {
    emulator.createVmss(ss.resourceGroup, ss.name, {
      instances: ss.instances,
      systemAssigned: ss.systemAssigned ?? false,
      userAssigned: (ss.userAssigned ?? []).map((r) => resolve(ss.resourceGroup, r)),
    });
  }
  for (const sp of seed.servicePrincipals ?? []) emulator.registerServicePrincipal(sp);
  for (const ra of seed.roleAssignments ?? []) {
    const scope = ra.scope.startsWith('/') ? ra.scope : `/subscriptions/${emulator.subscriptionId}/resourceGroups/${ra.scope}`;
    emulator.grantRole(ra.principal, ra.role, scope);
  }
  const imds: { target: ImdsTarget; url: string }[] = [];
  for (const target of seed.imds ?? []) {
    const listener = await emulator.startImds(target, imdsHost ? { host: imdsHost } : {});
    imds.push({ target, url: listener.url });
  }
  return {
    identities: identities.map((i) => ({ id: i.id, name: i.name, clientId: i.clientId, principalId: i.principalId })),
    imds,
  };
}
