// The plain, readonly inputs of MIC's pure core: what the caches hold, what ARM is known to have attached,
// our own writes the caches have not shown yet, and the policy flags. The shell (reconciler) builds these;
// nothing here does I/O.
import type { CredentialPolicy } from '../../crds/credential-policy.js';
import type { NamespacePolicies } from '../../crds/namespace-policy.js';
import type {
  AzureAssignedIdentity,
  AzureIdentity,
  AzureIdentityBinding,
  NodeView,
  PodView,
} from '../../crds/types.js';

/** Everything one planning pass looks at. Arrays need not be sorted: the core sorts what it returns. */
export interface ClusterSnapshot {
  readonly pods: readonly PodView[];
  readonly nodes: readonly SnapshotNode[];
  readonly identities: readonly AzureIdentity[];
  readonly bindings: readonly AzureIdentityBinding[];
  /** Current AzureAssignedIdentities as the cache holds them. */
  readonly assigned: readonly AzureAssignedIdentity[];
  /**
   * What ARM says is attached, per target key. A missing key or an `undefined` value means "not known"
   * (never read, or the last read is stale); the plan then trusts AAI states instead.
   */
  readonly attachments: ReadonlyMap<string, TargetAttachment | undefined>;
  /** Our own AAI writes the cache has not reflected yet. */
  readonly pending: PendingWrites;
  /**
   * The namespaces' identity policies (their permitted-identities annotation), read only when
   * `MicPolicy.namespaceIdentityPolicy` is 'enforce'; a namespace missing here permits nothing then.
   */
  readonly namespacePolicies?: NamespacePolicies;
  /**
   * What the federated credential writer knows Azure holds, the way `attachments` says what ARM holds on VMs.
   * Absent: nothing is known, and no Federated AAI becomes Assigned.
   */
  readonly federation?: FederationState;
}

/** Federated credentials known per user-assigned identity, keyed by lower-case resource ID (see federationKey). */
export interface FederationState {
  /** Subjects (`system:serviceaccount:<ns>:<sa>`) whose credential is known to exist, per identity. */
  readonly ready: ReadonlyMap<string, ReadonlySet<string>>;
  /** Subjects the writer could not give a credential, per identity, with the code and the sentence to show. */
  readonly refused: ReadonlyMap<string, ReadonlyMap<string, FederationRefusal>>;
}

export interface FederationRefusal {
  readonly code: 'FederatedCredentialLimit' | 'FederatedCredentialFailed';
  readonly reason: string;
}

/** The key of a user-assigned identity in FederationState: its resource ID, lower-case (as desiredFederatedCredentials). */
export function federationKey(resourceID: string): string {
  return resourceID.toLowerCase();
}

/** A node plus the VM/VMSS that carries its identities, resolved by the shell from `spec.providerID`. */
export interface SnapshotNode extends NodeView {
  /** undefined when the provider ID does not name an Azure VM or scale set. */
  readonly target: ComputeTargetRef | undefined;
}

/**
 * The ARM resource whose identity list a node uses (all nodes of one scale set share one), carrying all that an
 * ARM call needs: plans hand it to the executor as is. The one target type of MIC.
 */
export interface ComputeTargetRef {
  readonly kind: 'vm' | 'vmss';
  /** VM name or scale-set name. */
  readonly name: string;
  /** The resource group the node's provider ID names; absent: the cloud config's. */
  readonly resourceGroup?: string;
  /** Unique key for this target (the shell uses targetKey()); plans are grouped by it. */
  readonly key: string;
}

export interface TargetAttachment {
  /** User-assigned identity resource IDs, canonical (see canonicalResourceId). */
  readonly ids: readonly string[];
  readonly systemAssigned: boolean;
  /**
   * Canonical IDs with a change pending or in flight on this target: neither known attached nor known absent
   * until it settles, so no step counts on either.
   */
  readonly unsettled?: readonly string[];
}

/** AAI keys (`namespace/name`, see assignedKey) we created or deleted and have not yet seen in the cache. */
export interface PendingWrites {
  /** Optional: the shell overlays its own creations on `assigned` instead. */
  readonly created?: ReadonlySet<string>;
  readonly deleted: ReadonlySet<string>;
}

export interface MicPolicy {
  /** --forceNamespaced (or FORCENAMESPACED=true): every identity behaves as namespaced. */
  readonly forceNamespaced: boolean;
  /** Client IDs never removed from a VM/VMSS (--immutable-user-msis), lower-case. */
  readonly immutableClientIds: ReadonlySet<string>;
  /** Resource IDs never removed (e.g. the cluster identity), canonical. */
  readonly immutableResourceIds: ReadonlySet<string>;
  /**
   * Which clientPassword Secrets and adEndpoints a service principal identity may use (the shell fills the allowed
   * authorities from the known clouds, the cloud config and --allowed-ad-endpoints); others are skipped.
   */
  readonly credentials: CredentialPolicy;
  /** --namespace-identity-policy: 'enforce' assigns only identities the namespaces' annotations permit. Default 'off'. */
  readonly namespaceIdentityPolicy?: 'off' | 'enforce';
  /**
   * Federated mode (--enable-federated-identities, --service-account-issuer). Absent or not enabled: an identity with
   * spec.mode Federated is skipped (never attached instead); enabled with an empty issuer: skipped too.
   */
  readonly federation?: { readonly enabled: boolean; readonly issuer: string };
}

/** The key under which AAIs are tracked: `namespace/name` (namespaced AAIs make the name alone ambiguous). */
export function assignedKey(namespace: string, name: string): string {
  return `${namespace}/${name}`;
}

/** The key of a VM/VMSS: `<kind>/<resource group>/<name>`, lower-case (ARM names are case-insensitive). */
export function targetKey(kind: 'vm' | 'vmss', resourceGroup: string, name: string): string {
  return `${kind}/${resourceGroup.toLowerCase()}/${name.toLowerCase()}`;
}

/**
 * ARM compares resource IDs case-insensitively; we compare trimmed, single-leading-slash, lower-case text.
 * Same rule as src/azure/resource-id.ts canonicalResourceId (duplicated because the core imports only crds).
 */
export function canonicalResourceId(id: string): string {
  return `/${id.trim().replace(/^\/+/, '').replace(/\/+$/, '')}`.toLowerCase();
}
