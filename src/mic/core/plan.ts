// The plan: which AzureAssignedIdentities to create, update, mark Assigned or delete, and which identities to
// add to or remove from each VM/VMSS, given the cluster snapshot and the desired state. Follows the original's
// Sync (diff, in-use rule, immutable identities, VMSS consolidation) with the differences documented below.
//
// Ordering contract for the executor (the plan is data; the executor makes it so):
// - Items with `afterTarget: undefined` are applied at once, without waiting for ARM.
// - Items with `afterTarget: K` are applied only after the op on target K succeeded; if it fails they are
//   dropped and the next cycle re-plans from fresh state (nothing is replayed).
// - A status update on an AAI that this plan also creates or updates is applied after that write.
// - A delete is "mark Unassigned (when markUnassigned), then delete / remove our finalizer".
//
// Decisions where the original left room:
// - An Assigned AAI whose identity ARM shows as missing (manually detached, §2.6 reconcile) is re-added and
//   its AAI stays Assigned: flipping it to Created would make NMI refuse tokens for a pod that was fine, and
//   the re-add does not depend on the AAI's state.
// - An AAI is removed from ARM whatever its state (the original only for Assigned or ''), as long as it is
//   ours, unused and mutable: a Created AAI may have had its PATCH succeed and its status write fail.
// - An update whose old identity must leave a target waits for that removal, so a failed removal keeps the
//   record of what we attached instead of leaking it.
// - An update that keeps the same identity on the same target keeps state Assigned instead of going through
//   Created again (the original re-assigned it, making NMI refuse tokens meanwhile).
// - An AAI is tracked by `namespace/name`, not the original's name alone.
import { ASSIGNED_IDENTITY_FINALIZER, NODE_NAME_LABEL, POD_UID_LABEL } from '../../crds/names.js';
import { serviceAccountSubject } from '../../crds/federation.js';
import {
  identityMode,
  type AssignedIdentityState,
  type AzureAssignedIdentity,
  type AzureIdentity,
  type AzureIdentityBinding,
  type PodView,
} from '../../crds/types.js';
import type { DesiredAssignment, DesiredState } from './desired.js';
import { cmp, compareSkips, skip, type Skip } from './skip.js';
import {
  assignedKey,
  canonicalResourceId,
  type ClusterSnapshot,
  type ComputeTargetRef,
  federationKey,
  type MicPolicy,
  type SnapshotNode,
} from './snapshot.js';

export interface Plan {
  /** New AAIs, written in state Created; sorted by key. */
  readonly createAssigned: readonly AssignedSpec[];
  /** AAIs whose identity, binding or node changed (the original's update list); sorted by key. */
  readonly updateAssigned: readonly AssignedUpdate[];
  /** AAIs no longer desired; sorted by key. */
  readonly deleteAssigned: readonly AssignedDelete[];
  /** Created (or Unassigned) → Assigned; sorted by key. */
  readonly statusUpdates: readonly StatusUpdate[];
  /** One entry per VM/VMSS whose identity list must change; never an empty op. Sorted by target key. */
  readonly targetOps: readonly TargetOp[];
  /** Everything declined, from computeDesired and from planning; sorted. */
  readonly skipped: readonly Skip[];
}

/** An AAI as MIC writes it. The adapter turns it into the wire object (refs embedded in full). */
export interface AssignedSpec {
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly identityRef: AzureIdentity;
  readonly bindingRef: AzureIdentityBinding;
  readonly pod: string;
  readonly podNamespace: string;
  readonly nodeName: string;
  /** `{nodename: <node>}`: NMI watches its node's AAIs by this label. */
  readonly labels: Readonly<Record<string, string>>;
  readonly finalizers: readonly string[];
  readonly state: 'Created' | 'Assigned';
}

export interface AssignedRef {
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly resourceVersion: string;
}

export interface AssignedUpdate {
  /** The object being replaced; its resourceVersion makes the PUT optimistic. */
  readonly before: AssignedRef;
  readonly after: AssignedSpec;
  /** Set when the old identity has to leave this target first (see the ordering contract). */
  readonly afterTarget: string | undefined;
}

export type DeleteCause = 'NotDesired' | 'NodeGone' | 'AlreadyDeleting';

export interface AssignedDelete extends AssignedRef {
  readonly cause: DeleteCause;
  /** Patch status Unassigned before deleting (not for objects already Unassigned, deleting, or on a gone node). */
  readonly markUnassigned: boolean;
  readonly afterTarget: string | undefined;
}

export interface StatusUpdate {
  readonly key: string;
  readonly namespace: string;
  readonly name: string;
  readonly from: AssignedIdentityState;
  readonly to: 'Assigned';
  readonly afterTarget: string | undefined;
}

export interface TargetOp {
  readonly target: ComputeTargetRef;
  /** Canonical resource IDs, sorted. */
  readonly add: readonly string[];
  /** Canonical resource IDs, sorted. Never the system-assigned identity, never one we did not assign. */
  readonly remove: readonly string[];
}

/** True when the plan asks for no write at all (skips do not count). */
export function isEmptyPlan(p: Plan): boolean {
  return (
    p.createAssigned.length === 0 &&
    p.updateAssigned.length === 0 &&
    p.deleteAssigned.length === 0 &&
    p.statusUpdates.length === 0 &&
    p.targetOps.length === 0
  );
}

export function plan(snapshot: ClusterSnapshot, desired: DesiredState, policy: MicPolicy): Plan {
  const p = new Planner(snapshot, policy, desired.skipped);
  const live = p.liveDesired(desired.assignments);
  for (const d of live) p.planAssignment(d);
  p.planDeletes();
  return p.result();
}

/** Mutable scratch state of one planning pass; never escapes `plan()`. */
class Planner {
  private readonly nodes = new Map<string, SnapshotNode>();
  private readonly targets = new Map<string, ComputeTargetRef>();
  private readonly attached = new Map<string, ReadonlySet<string> | undefined>();
  /** target key → canonical IDs with a change in flight there: their state is not known. */
  private readonly unsettled = new Map<string, ReadonlySet<string>>();
  private readonly current = new Map<string, AzureAssignedIdentity>();
  /** AAIs we deleted that the cache still shows. */
  private readonly leaving = new Set<string>();
  /** Desired AAI keys on existing nodes. */
  private readonly wanted = new Set<string>();
  /** target key → canonical IDs some desired type-0 assignment needs there (the in-use rule). */
  private readonly inUse = new Map<string, Set<string>>();
  private readonly adds = new Map<string, Set<string>>();
  private readonly removes = new Map<string, Set<string>>();
  private readonly nodesWithoutTarget = new Set<string>();
  /** Pods by `namespace/name`, built on the first federated assignment only. */
  private pods: Map<string, PodView> | undefined;
  /** raw resource ID → canonical; thousands of AAIs share a few hundred IDs. */
  private readonly canonical = new Map<string, string>();

  private readonly creates: AssignedSpec[] = [];
  private readonly updates: AssignedUpdate[] = [];
  private readonly deletes: AssignedDelete[] = [];
  private readonly statuses: StatusUpdate[] = [];
  private readonly skipped: Skip[];

  constructor(
    private readonly snapshot: ClusterSnapshot,
    private readonly policy: MicPolicy,
    desiredSkips: readonly Skip[],
  ) {
    this.skipped = [...desiredSkips];
    for (const node of snapshot.nodes) {
      this.nodes.set(node.name, node);
      if (node.target !== undefined) this.targets.set(node.target.key, node.target);
    }
    for (const [key, attachment] of snapshot.attachments) {
      this.attached.set(key, attachment === undefined ? undefined : new Set(attachment.ids.map(canonicalResourceId)));
      if (attachment?.unsettled !== undefined && attachment.unsettled.length > 0) {
        this.unsettled.set(key, new Set(attachment.unsettled.map(canonicalResourceId)));
      }
    }
    for (const aai of snapshot.assigned) {
      const key = assignedKey(aai.namespace, aai.name);
      // Deleted by us, not yet gone from the cache: neither deleted again nor counted.
      if (snapshot.pending.deleted.has(key)) this.leaving.add(key);
      else this.current.set(key, aai);
    }
  }

  /** Drops (with a Skip) assignments whose node the cache does not know, and fills the in-use index. */
  liveDesired(assignments: readonly DesiredAssignment[]): DesiredAssignment[] {
    const live: DesiredAssignment[] = [];
    for (const d of assignments) {
      const node = this.nodes.get(d.nodeName);
      if (node === undefined) {
        this.skipped.push(
          skip('Pod', d.podNamespace, d.pod, 'NodeNotFound', `node ${d.nodeName} is not known; no identity is assigned there`),
        );
        continue;
      }
      live.push(d);
      this.wanted.add(d.key);
      if (isAttachedType0(d.identity) && node.target !== undefined) {
        addTo(this.inUse, node.target.key, this.canon(d.identity.resourceID));
      }
    }
    return live;
  }

  planAssignment(d: DesiredAssignment): void {
    const target = this.targetOfNode(d.nodeName);
    const existing = this.current.get(d.key);
    if (existing === undefined && this.leaving.has(d.key)) {
      // Creating it now would race our own delete (409 AlreadyExists while the finalizer is removed).
      this.skipped.push(this.stillDeleting(d));
      return;
    }
    if (existing === undefined) {
      if (this.snapshot.pending.created?.has(d.key) === true) {
        // Created by us, not seen yet: do not create again; make sure ARM gets it (an idempotent add).
        if (isAttachedType0(d.identity) && target !== undefined && this.isAttached(target, d.identity) !== true) {
          this.addId(target, d.identity);
        }
        return;
      }
      this.creates.push(spec(d, 'Created'));
      this.confirm(d, target, 'Created');
      return;
    }
    if (existing.deleting) {
      this.skipped.push(this.stillDeleting(d));
      return;
    }
    if (matches(existing, d)) {
      if (existing.state === 'Assigned' || existing.state === '') {
        // The §2.6 reconcile: ARM lost an identity we had confirmed; put it back, keep the AAI Assigned.
        if (isAttachedType0(d.identity) && target !== undefined && this.isAttached(target, d.identity) === false) {
          this.addId(target, d.identity);
        }
        return;
      }
      this.confirm(d, target, existing.state);
      return;
    }
    this.planUpdate(existing, d, target);
  }

  /** Current AAIs that are not desired (or are being deleted): delete, removing their identity when ours to remove. */
  planDeletes(): void {
    for (const [key, aai] of this.current) {
      if (this.wanted.has(key) && !aai.deleting) continue;
      // Deleting without our finalizer: the API server finishes it; nothing of ours holds it.
      if (aai.deleting && !aai.finalizers.includes(ASSIGNED_IDENTITY_FINALIZER)) continue;
      const ref = { key, namespace: aai.namespace, name: aai.name, resourceVersion: aai.resourceVersion };
      const node = this.nodes.get(aai.nodeName);
      if (node === undefined) {
        // The node (and so its VM) is gone: nothing to detach.
        this.deletes.push({ ...ref, cause: 'NodeGone', markUnassigned: false, afterTarget: undefined });
        continue;
      }
      const afterTarget = this.planRemoval(aai);
      this.deletes.push({
        ...ref,
        cause: aai.deleting ? 'AlreadyDeleting' : 'NotDesired',
        markUnassigned: !aai.deleting && aai.state !== 'Unassigned',
        afterTarget,
      });
    }
  }

  result(): Plan {
    const targetOps: TargetOp[] = [];
    for (const key of [...new Set([...this.adds.keys(), ...this.removes.keys()])].sort(cmp)) {
      const target = this.targets.get(key);
      if (target === undefined) continue; // cannot happen: keys come from node targets
      const add = [...(this.adds.get(key) ?? [])].sort(cmp);
      const addSet = new Set(add);
      // Add wins over remove, as in the original's delta map (defensive: the in-use rule already prevents it).
      const remove = [...(this.removes.get(key) ?? [])].filter((id) => !addSet.has(id)).sort(cmp);
      if (add.length > 0 || remove.length > 0) targetOps.push({ target, add, remove });
    }
    for (const name of [...this.nodesWithoutTarget].sort(cmp)) {
      this.skipped.push(
        skip('Node', '', name, 'NodeWithoutTarget', 'spec.providerID does not name an Azure VM or scale set; user-assigned identities stay Created'),
      );
    }
    const byKey = (a: { readonly key: string }, b: { readonly key: string }): number => cmp(a.key, b.key);
    return {
      createAssigned: this.creates.sort(byKey),
      updateAssigned: this.updates.sort((a, b) => cmp(a.after.key, b.after.key)),
      deleteAssigned: this.deletes.sort(byKey),
      statusUpdates: this.statuses.sort(byKey),
      targetOps,
      skipped: this.skipped.sort(compareSkips),
    };
  }

  private stillDeleting(d: DesiredAssignment): Skip {
    return skip(
      'AzureAssignedIdentity',
      d.namespace,
      d.name,
      'PreviousStillDeleting',
      `waiting for the previous AzureAssignedIdentity to be deleted before creating it again for pod ${d.podNamespace}/${d.pod}`,
    );
  }

  private planUpdate(existing: AzureAssignedIdentity, d: DesiredAssignment, target: ComputeTargetRef | undefined): void {
    const afterTarget = this.planRemoval(existing);
    const wasAssigned = existing.state === 'Assigned' || existing.state === '';
    const keep = wasAssigned && this.sameFootprint(existing, d, target);
    this.updates.push({
      before: { key: d.key, namespace: existing.namespace, name: existing.name, resourceVersion: existing.resourceVersion },
      after: spec(d, keep ? 'Assigned' : 'Created'),
      afterTarget,
    });
    if (!keep) this.confirm(d, target, 'Created');
  }

  /** Moves an AAI to Assigned: at once when nothing in ARM is needed, else after its target's add. */
  private confirm(d: DesiredAssignment, target: ComputeTargetRef | undefined, from: AssignedIdentityState): void {
    const status = { key: d.key, namespace: d.namespace, name: d.name, from, to: 'Assigned' as const };
    const type = d.identity.type;
    switch (type) {
      case 1:
      case 2:
        // Service principals live in AAD, not on the VM: nothing to attach.
        this.statuses.push({ ...status, afterTarget: undefined });
        return;
      case 0:
        if (identityMode(d.identity) === 'Federated') {
          this.confirmFederated(d, status);
          return;
        }
        if (target === undefined) {
          this.nodesWithoutTarget.add(d.nodeName);
          return;
        }
        if (this.isAttached(target, d.identity) === true) {
          this.statuses.push({ ...status, afterTarget: undefined });
          return;
        }
        this.addId(target, d.identity);
        this.statuses.push({ ...status, afterTarget: target.key });
        return;
      case null:
        return; // computeDesired never lets an invalid type through
      default: {
        const never: never = type;
        throw new Error(`unhandled identity type ${String(never)}`);
      }
    }
  }

  /**
   * A Federated identity needs no VM: Assigned as soon as the credential for the pod's service account is known to
   * exist (FederationState, filled from the writer's outcomes), else it stays Created with a skip saying why.
   */
  private confirmFederated(d: DesiredAssignment, status: Omit<StatusUpdate, 'afterTarget'>): void {
    const subject = this.subjectOf(d);
    const key = federationKey(d.identity.resourceID);
    const federation = this.snapshot.federation;
    if (subject !== undefined && federation?.ready.get(key)?.has(subject) === true) {
      this.statuses.push({ ...status, afterTarget: undefined });
      return;
    }
    const refused = subject === undefined ? undefined : federation?.refused.get(key)?.get(subject);
    this.skipped.push(
      refused !== undefined
        ? skip('AzureAssignedIdentity', d.namespace, d.name, refused.code, `pod ${d.podNamespace}/${d.pod}: ${refused.reason}`)
        : skip('AzureAssignedIdentity', d.namespace, d.name, 'FederatedCredentialPending',
          `waiting for the federated credential of identity ${d.identity.namespace}/${d.identity.name} for ` +
            `${subject ?? `pod ${d.podNamespace}/${d.pod}'s service account`}`),
    );
  }

  /** The service-account subject a pod's federated token carries (the API server defaults the account to `default`). */
  private subjectOf(d: DesiredAssignment): string | undefined {
    if (this.pods === undefined) {
      this.pods = new Map(this.snapshot.pods.map((p) => [`${p.namespace}/${p.name}`, p]));
    }
    const pod = this.pods.get(`${d.podNamespace}/${d.pod}`);
    if (pod === undefined) return undefined;
    return serviceAccountSubject(d.podNamespace, pod.serviceAccountName || 'default');
  }

  /**
   * Schedules removal of an AAI's identity from its node's target when it is ours to remove: user-assigned,
   * not needed there by any desired assignment (any pod, any node of the same VMSS), not immutable, and not
   * known to be absent already. Returns the target key the AAI's own write must wait for, if any.
   */
  private planRemoval(aai: AzureAssignedIdentity): string | undefined {
    const identity = aai.identityRef;
    // A Federated identity was never attached by us: nothing to remove from the VM.
    if (identity === null || !isAttachedType0(identity)) return undefined;
    const target = this.targetOfNode(aai.nodeName);
    if (target === undefined) return undefined;
    const id = this.canon(identity.resourceID);
    if (id === '/' || this.inUse.get(target.key)?.has(id) === true) return undefined;
    if (this.isImmutable(identity, id)) return undefined;
    if (this.isAttached(target, identity) === false) return undefined;
    addTo(this.removes, target.key, id);
    return target.key;
  }

  private sameFootprint(existing: AzureAssignedIdentity, d: DesiredAssignment, target: ComputeTargetRef | undefined): boolean {
    const before = existing.identityRef;
    if (before === null || before.type !== d.identity.type) return false;
    if (identityMode(before) !== identityMode(d.identity)) return false;
    if (d.identity.type !== 0) return true;
    if (identityMode(d.identity) === 'Federated') {
      const subject = this.subjectOf(d);
      return (
        this.canon(before.resourceID) === this.canon(d.identity.resourceID) &&
        subject !== undefined &&
        this.snapshot.federation?.ready.get(federationKey(d.identity.resourceID))?.has(subject) === true
      );
    }
    const beforeTarget = this.targetOfNode(existing.nodeName);
    return (
      target !== undefined &&
      beforeTarget?.key === target.key &&
      this.canon(before.resourceID) === this.canon(d.identity.resourceID) &&
      this.isAttached(target, d.identity) !== false
    );
  }

  private isImmutable(identity: AzureIdentity, canonicalId: string): boolean {
    return (
      this.policy.immutableClientIds.has(identity.clientID.toLowerCase()) ||
      this.policy.immutableResourceIds.has(canonicalId)
    );
  }

  /** true / false when ARM's list for the target is known, undefined when it is not. */
  private isAttached(target: ComputeTargetRef, identity: AzureIdentity): boolean | undefined {
    const id = this.canon(identity.resourceID);
    if (this.unsettled.get(target.key)?.has(id) === true) return undefined;
    return this.attached.get(target.key)?.has(id);
  }

  private addId(target: ComputeTargetRef, identity: AzureIdentity): void {
    addTo(this.adds, target.key, this.canon(identity.resourceID));
  }

  private canon(resourceID: string): string {
    let id = this.canonical.get(resourceID);
    if (id === undefined) {
      id = canonicalResourceId(resourceID);
      this.canonical.set(resourceID, id);
    }
    return id;
  }

  private targetOfNode(nodeName: string): ComputeTargetRef | undefined {
    return this.nodes.get(nodeName)?.target;
  }
}

/** The original's match rule (plus namespaces): same binding and identity versions, same pod, same node. */
function matches(aai: AzureAssignedIdentity, d: DesiredAssignment): boolean {
  const identity = aai.identityRef;
  const binding = aai.bindingRef;
  return (
    identity !== null &&
    binding !== null &&
    binding.namespace === d.binding.namespace &&
    binding.name === d.binding.name &&
    binding.resourceVersion === d.binding.resourceVersion &&
    identity.namespace === d.identity.namespace &&
    identity.name === d.identity.name &&
    identity.resourceVersion === d.identity.resourceVersion &&
    aai.pod === d.pod &&
    aai.podNamespace === d.podNamespace &&
    // An AAI written before pod uids were recorded matches any incarnation; one with a uid only its own.
    (aai.podUid === '' || aai.podUid === d.podUid) &&
    aai.nodeName === d.nodeName
  );
}

function spec(d: DesiredAssignment, state: 'Created' | 'Assigned'): AssignedSpec {
  return {
    key: d.key,
    namespace: d.namespace,
    name: d.name,
    identityRef: d.identity,
    bindingRef: d.binding,
    pod: d.pod,
    podNamespace: d.podNamespace,
    nodeName: d.nodeName,
    labels: { [NODE_NAME_LABEL]: d.nodeName, ...(d.podUid !== '' ? { [POD_UID_LABEL]: d.podUid } : {}) },
    finalizers: [ASSIGNED_IDENTITY_FINALIZER],
    state,
  };
}

/** A user-assigned identity MIC attaches to VMs: type 0 in Attached mode (a Federated one never touches a VM). */
function isAttachedType0(identity: AzureIdentity): boolean {
  return identity.type === 0 && identityMode(identity) !== 'Federated';
}

function addTo(map: Map<string, Set<string>>, key: string, value: string): void {
  const set = map.get(key);
  if (set === undefined) map.set(key, new Set([value]));
  else set.add(value);
}
