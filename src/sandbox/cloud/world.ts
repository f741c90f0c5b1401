import { randomUUID } from 'node:crypto';
import {
  deriveIdentityType,
  identityKey,
  isUserAssignedIdentityId,
  type IdentityPatchPlan,
  type IdentityTypeName,
} from './identity-patch.js';
import {
  BUILT_IN_ROLES,
  effectivePermissions,
  findRole,
  normalizeScope,
  permissionsAllow,
  type RoleAssignmentRecord,
} from './rbac.js';
import { realClock } from '../../common/clock.js';

/** A user-assigned managed identity as the MSI resource provider stores it. */
export interface UserAssignedIdentity {
  readonly id: string;
  readonly name: string;
  readonly resourceGroup: string;
  readonly location: string;
  readonly clientId: string;
  readonly principalId: string;
  readonly tenantId: string;
  readonly tags: Readonly<Record<string, string>>;
}

export interface ServicePrincipal {
  readonly clientId: string;
  readonly objectId: string;
  readonly tenantIds: readonly string[];
  readonly secret?: string;
  readonly certificatePem?: string;
}

export interface ServicePrincipalSpec {
  readonly clientId: string;
  readonly secret?: string;
  readonly certificatePem?: string;
  readonly tenantId?: string;
  readonly objectId?: string;
}

interface AttachedIdentity {
  readonly id: string; // casing as first written
  readonly clientId: string;
  readonly principalId: string;
}

interface SystemIdentity {
  readonly principalId: string;
  readonly clientId: string;
  readonly tenantId: string;
}

export type ComputeKind = 'vm' | 'vmss';

export interface ComputeResource {
  readonly kind: ComputeKind;
  readonly resourceGroup: string;
  readonly name: string;
  readonly location: string;
  readonly vmId: string;
  readonly createdAt: string;
  readonly vmSize: string;
  readonly instances: string[];
  system: SystemIdentity | undefined;
  readonly user: Map<string, AttachedIdentity>;
  provisioningState: 'Succeeded' | 'Updating' | 'Failed';
  /** Id of the long-running operation currently changing this resource. */
  pendingOperation: string | undefined;
}

export interface ComputeSpec {
  readonly systemAssigned?: boolean;
  /** User-assigned identity resource IDs; each must exist. */
  readonly userAssigned?: readonly string[];
  readonly location?: string;
  readonly vmSize?: string;
}

export interface VmssSpec extends ComputeSpec {
  readonly instances: readonly string[] | number;
}

/** A federated identity credential under a user-assigned identity (ARM child resource). */
export interface FederatedCredential {
  /** Casing as first written. */
  readonly name: string;
  readonly issuer: string;
  readonly subject: string;
  readonly audiences: readonly string[];
  /** When it was created or last changed (clock ms): Azure AD sees it only after the propagation delay from here. */
  readonly changedAt: number;
}

/** The identity part of a VM/VMSS as the admin API and tests see it. */
export interface IdentityState {
  readonly type: IdentityTypeName;
  readonly systemAssigned: boolean;
  readonly principalId?: string;
  readonly userAssignedIdentities: readonly string[];
  readonly provisioningState: string;
}

/** In-memory Azure: resource groups, identities, VMs, scale sets, service principals, role assignments. */
export class World {
  readonly subscriptionId: string;
  readonly tenantId: string;
  readonly defaultLocation: string;
  readonly #resourceGroups = new Map<string, { name: string; location: string }>();
  readonly #identities = new Map<string, UserAssignedIdentity>();
  readonly #compute = new Map<string, ComputeResource>();
  readonly #servicePrincipals = new Map<string, ServicePrincipal>();
  readonly #roleAssignments = new Map<string, RoleAssignmentRecord>(); // name (lower-case) -> assignment
  readonly #federated = new Map<string, Map<string, FederatedCredential>>(); // identityKey -> name (lower-case) -> FIC

  constructor(opts: { subscriptionId: string; tenantId: string; location?: string }) {
    this.subscriptionId = opts.subscriptionId;
    this.tenantId = opts.tenantId;
    this.defaultLocation = opts.location ?? 'eastus';
  }

  // ---- resource groups -------------------------------------------------------------------------------------------
  createResourceGroup(name: string, location = this.defaultLocation): { id: string; name: string; location: string } {
    const existing = this.#resourceGroups.get(name.toLowerCase());
    const rg = existing ?? { name, location };
    this.#resourceGroups.set(name.toLowerCase(), rg);
    return { id: `/subscriptions/${this.subscriptionId}/resourceGroups/${rg.name}`, name: rg.name, location: rg.location };
  }

  resourceGroup(name: string): { name: string; location: string } | undefined {
    return this.#resourceGroups.get(name.toLowerCase());
  }

  // ---- user-assigned identities (MSI) ----------------------------------------------------------------------------
  createUserAssignedIdentity(
    rg: string,
    name: string,
    opts: { location?: string; tags?: Record<string, string>; clientId?: string; principalId?: string } = {},
  ): UserAssignedIdentity {
    const group = this.#requireGroup(rg);
    const id = `/subscriptions/${this.subscriptionId}/resourcegroups/${group.name}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/${name}`;
    const existing = this.#identities.get(identityKey(id));
    const identity: UserAssignedIdentity = {
      id,
      name,
      resourceGroup: group.name,
      location: opts.location ?? existing?.location ?? group.location,
      clientId: existing?.clientId ?? opts.clientId ?? randomUUID(),
      principalId: existing?.principalId ?? opts.principalId ?? randomUUID(),
      tenantId: this.tenantId,
      tags: opts.tags ?? existing?.tags ?? {},
    };
    this.#identities.set(identityKey(id), identity);
    return identity;
  }

  /** Deletes by resource ID, or by (resource group, name). Attached copies on VMs stay, as in Azure. */
  deleteUserAssignedIdentity(idOrRg: string, name?: string): boolean {
    const id = name === undefined ? idOrRg : this.identityId(idOrRg, name);
    this.#federated.delete(identityKey(id)); // a child resource goes with its parent
    return this.#identities.delete(identityKey(id));
  }

  /** The user-assigned identity whose client ID this is (Azure AD's view: a managed identity is an app). */
  identityByClientId(clientId: string): UserAssignedIdentity | undefined {
    const c = clientId.toLowerCase();
    return [...this.#identities.values()].find((i) => i.clientId.toLowerCase() === c);
  }

  // ---- federated identity credentials ------------------------------------------------------------------------------
  federatedCredentials(identityId: string): FederatedCredential[] {
    return [...(this.#federated.get(identityKey(identityId))?.values() ?? [])];
  }

  federatedCredential(identityId: string, name: string): FederatedCredential | undefined {
    return this.#federated.get(identityKey(identityId))?.get(name.toLowerCase());
  }

  /** Stores a FIC (the caller validated it); the first casing of the name is kept. Returns whether it was new. */
  putFederatedCredential(identityId: string, fic: FederatedCredential): boolean {
    const key = identityKey(identityId);
    const byName = this.#federated.get(key) ?? new Map<string, FederatedCredential>();
    this.#federated.set(key, byName);
    const existing = byName.get(fic.name.toLowerCase());
    byName.set(fic.name.toLowerCase(), existing ? { ...fic, name: existing.name } : fic);
    return existing === undefined;
  }

  deleteFederatedCredential(identityId: string, name: string): boolean {
    return this.#federated.get(identityKey(identityId))?.delete(name.toLowerCase()) ?? false;
  }

  federatedCredentialView(identity: UserAssignedIdentity, fic: FederatedCredential): Record<string, unknown> {
    return {
      id: `${identity.id}/federatedIdentityCredentials/${fic.name}`,
      name: fic.name,
      type: 'Microsoft.ManagedIdentity/userAssignedIdentities/federatedIdentityCredentials',
      properties: { issuer: fic.issuer, subject: fic.subject, audiences: [...fic.audiences] },
    };
  }

  identityId(rg: string, name: string): string {
    return `/subscriptions/${this.subscriptionId}/resourcegroups/${rg}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/${name}`;
  }

  getUserAssignedIdentity(id: string): UserAssignedIdentity | undefined {
    return this.#identities.get(identityKey(id));
  }

  listUserAssignedIdentities(rg?: string): UserAssignedIdentity[] {
    return [...this.#identities.values()].filter((i) => rg === undefined || i.resourceGroup.toLowerCase() === rg.toLowerCase());
  }

  // ---- service principals ------------------------------------------------------------------------------------------
  registerServicePrincipal(spec: ServicePrincipalSpec): { clientId: string; objectId: string; tenantId: string } {
    const tenantId = spec.tenantId ?? this.tenantId;
    const existing = this.#servicePrincipals.get(spec.clientId.toLowerCase());
    const sp: ServicePrincipal = {
      clientId: spec.clientId,
      objectId: existing?.objectId ?? spec.objectId ?? randomUUID(),
      tenantIds: [...new Set([...(existing?.tenantIds ?? []), tenantId])],
      ...(spec.secret !== undefined ? { secret: spec.secret } : existing?.secret !== undefined ? { secret: existing.secret } : {}),
      ...(spec.certificatePem !== undefined
        ? { certificatePem: spec.certificatePem }
        : existing?.certificatePem !== undefined
          ? { certificatePem: existing.certificatePem }
          : {}),
    };
    this.#servicePrincipals.set(spec.clientId.toLowerCase(), sp);
    return { clientId: sp.clientId, objectId: sp.objectId, tenantId };
  }

  servicePrincipal(clientId: string): ServicePrincipal | undefined {
    return this.#servicePrincipals.get(clientId.toLowerCase());
  }

  knowsTenant(tenantId: string): boolean {
    const t = tenantId.toLowerCase();
    if (t === this.tenantId.toLowerCase()) return true;
    return [...this.#servicePrincipals.values()].some((sp) => sp.tenantIds.some((x) => x.toLowerCase() === t));
  }

  // ---- directory and role assignments ------------------------------------------------------------------------------
  /** True when `objectId` is a principal of this directory: a service principal, a user-assigned or system identity. */
  knowsPrincipal(objectId: string): boolean {
    const oid = objectId.toLowerCase();
    if ([...this.#servicePrincipals.values()].some((sp) => sp.objectId.toLowerCase() === oid)) return true;
    if ([...this.#identities.values()].some((i) => i.principalId.toLowerCase() === oid)) return true;
    return [...this.#compute.values()].some((c) => c.system?.principalId.toLowerCase() === oid);
  }

  /** Resolves a principal reference: an object ID, or a service principal's / identity's client ID (as `az --assignee`). */
  resolvePrincipal(ref: string): string {
    const r = ref.toLowerCase();
    const sp = this.#servicePrincipals.get(r);
    if (sp) return sp.objectId;
    const identity = [...this.#identities.values()].find((i) => i.clientId.toLowerCase() === r || identityKey(i.id) === r);
    return identity?.principalId ?? ref;
  }

  roleAssignment(name: string): RoleAssignmentRecord | undefined {
    return this.#roleAssignments.get(name.toLowerCase());
  }

  roleAssignments(): RoleAssignmentRecord[] {
    return [...this.#roleAssignments.values()];
  }

  putRoleAssignment(record: RoleAssignmentRecord): void {
    this.#roleAssignments.set(record.name.toLowerCase(), record);
  }

  deleteRoleAssignment(name: string): RoleAssignmentRecord | undefined {
    const existing = this.#roleAssignments.get(name.toLowerCase());
    this.#roleAssignments.delete(name.toLowerCase());
    return existing;
  }

  /** An assignment with the same scope, principal and role, whatever its name. */
  equivalentRoleAssignment(scope: string, principalId: string, roleGuid: string): RoleAssignmentRecord | undefined {
    const s = normalizeScope(scope).toLowerCase();
    return [...this.#roleAssignments.values()].find(
      (a) => a.scope.toLowerCase() === s && a.principalId.toLowerCase() === principalId.toLowerCase() && a.roleDefinitionName === roleGuid,
    );
  }

  /** Grants `role` (name or GUID) to `principal` (object ID or client ID) at `scope`; returns the (possibly existing) assignment. */
  grantRole(principal: string, role: string, scope: string): RoleAssignmentRecord {
    const def = findRole(role);
    if (!def) throw new Error(`unknown role ${role}; known: ${BUILT_IN_ROLES.map((r) => r.roleName).join(', ')}`);
    const principalId = this.resolvePrincipal(principal);
    const existing = this.equivalentRoleAssignment(scope, principalId, def.name);
    if (existing) return existing;
    const record: RoleAssignmentRecord = {
      name: randomUUID(),
      scope: normalizeScope(scope),
      roleDefinitionName: def.name,
      roleDefinitionId: `/subscriptions/${this.subscriptionId}/providers/Microsoft.Authorization/roleDefinitions/${def.name}`,
      principalId,
      principalType: 'ServicePrincipal',
      createdOn: new Date(realClock.now()).toISOString(),
    };
    this.putRoleAssignment(record);
    return record;
  }

  /** Removes the assignments of `role` to `principal` exactly at `scope` (not above or below); returns how many. */
  revokeRole(principal: string, role: string, scope: string): number {
    const def = findRole(role);
    if (!def) throw new Error(`unknown role ${role}`);
    const principalId = this.resolvePrincipal(principal).toLowerCase();
    const s = normalizeScope(scope).toLowerCase();
    let n = 0;
    for (const a of [...this.#roleAssignments.values()]) {
      if (a.scope.toLowerCase() === s && a.principalId.toLowerCase() === principalId && a.roleDefinitionName === def.name) {
        this.#roleAssignments.delete(a.name.toLowerCase());
        n++;
      }
    }
    return n;
  }

  /** Whether `principalId` may perform `action` at `scope`, from its role assignments at that scope and above. */
  allows(principalId: string, action: string, scope: string): boolean {
    return permissionsAllow(effectivePermissions(this.#roleAssignments.values(), principalId, scope), action);
  }

  // ---- VMs and scale sets ------------------------------------------------------------------------------------------
  createVm(rg: string, name: string, spec: ComputeSpec = {}): ComputeResource {
    return this.#createCompute('vm', rg, name, spec, []);
  }

  createVmss(rg: string, name: string, spec: VmssSpec): ComputeResource {
    const instances =
      typeof spec.instances === 'number' ? Array.from({ length: spec.instances }, (_, i) => String(i)) : [...spec.instances];
    return this.#createCompute('vmss', rg, name, spec, instances);
  }

  compute(kind: ComputeKind, rg: string, name: string): ComputeResource | undefined {
    return this.#compute.get(computeKey(kind, rg, name));
  }

  /** Finds a VM or VMSS by name alone (admin convenience when names are unique). */
  findCompute(kind: ComputeKind, name: string, rg?: string): ComputeResource | undefined {
    if (rg !== undefined) return this.compute(kind, rg, name);
    return [...this.#compute.values()].find((c) => c.kind === kind && c.name.toLowerCase() === name.toLowerCase());
  }

  computeResourceId(c: ComputeResource): string {
    const type = c.kind === 'vm' ? 'virtualMachines' : 'virtualMachineScaleSets';
    return `/subscriptions/${this.subscriptionId}/resourceGroups/${c.resourceGroup}/providers/Microsoft.Compute/${type}/${c.name}`;
  }

  /** Replaces the user-assigned identities by hand (what `az vm identity remove` does behind MIC's back). */
  setIdentities(c: ComputeResource, userAssigned: readonly string[], systemAssigned?: boolean): void {
    c.user.clear();
    for (const id of userAssigned) this.#attach(c, id);
    if (systemAssigned === true && !c.system) c.system = this.#newSystemIdentity();
    if (systemAssigned === false) c.system = undefined;
  }

  /** Applies a validated identity plan; the caller has checked existence and permissions. */
  applyIdentityPlan(c: ComputeResource, plan: IdentityPatchPlan): void {
    if (plan.clearUserAssigned) c.user.clear();
    for (const id of plan.remove) c.user.delete(identityKey(id));
    for (const id of plan.add) if (!c.user.has(identityKey(id))) this.#attach(c, id);
    if (plan.system === 'add' && !c.system) c.system = this.#newSystemIdentity();
    if (plan.system === 'remove') c.system = undefined;
  }

  identityState(c: ComputeResource): IdentityState {
    return {
      type: deriveIdentityType(c.system !== undefined, c.user.size),
      systemAssigned: c.system !== undefined,
      ...(c.system ? { principalId: c.system.principalId } : {}),
      userAssignedIdentities: [...c.user.values()].map((u) => u.id),
      provisioningState: c.provisioningState,
    };
  }

  /** Identities a VM (or VMSS instance, through its scale set) can get tokens for. */
  attachedIdentities(c: ComputeResource): {
    system?: { clientId: string; principalId: string; tenantId: string; resourceId: string };
    user: readonly { id: string; clientId: string; principalId: string }[];
  } {
    return {
      ...(c.system ? { system: { ...c.system, resourceId: this.computeResourceId(c) } } : {}),
      user: [...c.user.values()],
    };
  }

  /** The ARM JSON of a VM or VMSS, as GET returns it. */
  computeView(c: ComputeResource): Record<string, unknown> {
    const identity = this.#identityView(c);
    const common = {
      name: c.name,
      id: this.computeResourceId(c),
      type: c.kind === 'vm' ? 'Microsoft.Compute/virtualMachines' : 'Microsoft.Compute/virtualMachineScaleSets',
      location: c.location,
      tags: {},
      ...(identity ? { identity } : {}),
    };
    if (c.kind === 'vm') {
      return {
        ...common,
        properties: {
          vmId: c.vmId,
          hardwareProfile: { vmSize: c.vmSize },
          osProfile: { computerName: c.name, adminUsername: 'azureuser' },
          provisioningState: c.provisioningState,
          timeCreated: c.createdAt,
        },
      };
    }
    return {
      ...common,
      sku: { name: c.vmSize, tier: 'Standard', capacity: c.instances.length },
      properties: {
        uniqueId: c.vmId,
        orchestrationMode: 'Uniform',
        upgradePolicy: { mode: 'Manual' },
        virtualMachineProfile: { osProfile: { computerNamePrefix: c.name, adminUsername: 'azureuser' } },
        provisioningState: c.provisioningState,
        timeCreated: c.createdAt,
      },
    };
  }

  /** The ARM JSON of one scale-set instance. */
  vmssInstanceView(c: ComputeResource, instanceId: string): Record<string, unknown> {
    return {
      name: `${c.name}_${instanceId}`,
      id: `${this.computeResourceId(c)}/virtualMachines/${instanceId}`,
      type: 'Microsoft.Compute/virtualMachineScaleSets/virtualMachines',
      location: c.location,
      instanceId,
      sku: { name: c.vmSize, tier: 'Standard' },
      properties: {
        vmId: instanceVmId(c.vmId, instanceId),
        latestModelApplied: true,
        osProfile: { computerName: vmssComputerName(c.name, instanceId), adminUsername: 'azureuser' },
        provisioningState: 'Succeeded',
        timeCreated: c.createdAt,
      },
    };
  }

  identityView(i: UserAssignedIdentity): Record<string, unknown> {
    return {
      id: i.id,
      name: i.name,
      type: 'Microsoft.ManagedIdentity/userAssignedIdentities',
      location: i.location,
      tags: i.tags,
      properties: { isolationScope: 'None', tenantId: i.tenantId, principalId: i.principalId, clientId: i.clientId },
    };
  }

  #identityView(c: ComputeResource): Record<string, unknown> | undefined {
    const type = deriveIdentityType(c.system !== undefined, c.user.size);
    if (type === 'None') return undefined; // ARM omits the identity block of a resource without identities
    const view: Record<string, unknown> = { type };
    if (c.system) {
      view.principalId = c.system.principalId;
      view.tenantId = c.system.tenantId;
    }
    if (c.user.size > 0) {
      view.userAssignedIdentities = Object.fromEntries(
        [...c.user.values()].map((u) => [u.id, { principalId: u.principalId, clientId: u.clientId }]),
      );
    }
    return view;
  }

  #createCompute(kind: ComputeKind, rg: string, name: string, spec: ComputeSpec, instances: string[]): ComputeResource {
    const group = this.#requireGroup(rg);
    const c: ComputeResource = {
      kind,
      resourceGroup: group.name,
      name,
      location: spec.location ?? group.location,
      vmId: randomUUID(),
      createdAt: new Date(realClock.now()).toISOString(),
      vmSize: spec.vmSize ?? 'Standard_DS2_v2',
      instances,
      system: spec.systemAssigned ? this.#newSystemIdentity() : undefined,
      user: new Map(),
      provisioningState: 'Succeeded',
      pendingOperation: undefined,
    };
    for (const id of spec.userAssigned ?? []) this.#attach(c, id);
    this.#compute.set(computeKey(kind, rg, name), c);
    return c;
  }

  #attach(c: ComputeResource, id: string): void {
    if (!isUserAssignedIdentityId(id)) throw new Error(`not a user-assigned identity resource ID: ${id}`);
    const identity = this.#identities.get(identityKey(id));
    if (!identity) throw new Error(`user-assigned identity ${id} does not exist`);
    c.user.set(identityKey(id), { id, clientId: identity.clientId, principalId: identity.principalId });
  }

  #newSystemIdentity(): SystemIdentity {
    return { principalId: randomUUID(), clientId: randomUUID(), tenantId: this.tenantId };
  }

  #requireGroup(rg: string): { name: string; location: string } {
    const group = this.#resourceGroups.get(rg.toLowerCase());
    if (!group) throw new Error(`resource group ${rg} does not exist; create it first`);
    return group;
  }
}

function computeKey(kind: ComputeKind, rg: string, name: string): string {
  return `${kind}/${rg.toLowerCase()}/${name.toLowerCase()}`;
}

/** AKS-style computer name of a scale-set instance: prefix + instance id in base 36, six digits. */
export function vmssComputerName(vmss: string, instanceId: string): string {
  const n = Number.parseInt(instanceId, 10);
  return `${vmss}${(Number.isNaN(n) ? 0 : n).toString(36).padStart(6, '0')}`;
}

function instanceVmId(scaleSetId: string, instanceId: string): string {
  // Deterministic per instance so repeated GETs agree.
  const suffix = instanceId.padStart(12, '0').slice(-12).replace(/[^0-9a-f]/gi, '0');
  return `${scaleSetId.slice(0, 24)}${suffix}`;
}
