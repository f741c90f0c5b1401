// The ports MIC's shell acts through. The executor and reconciler see only these interfaces; adapters/ implements
// them over client-node and arm/, and unit tests implement them in memory.
import type { AzureAssignedIdentity } from '../crds/types.js';
import type { ArmOperation } from './arm/batch.js';
import type { ArmWorkers } from './arm/worker.js';
import type { AssignedSpec } from './core/plan.js';

/** Which AzureAssignedIdentity a write is about. */
export interface AssignedObjectRef {
  readonly namespace: string;
  readonly name: string;
}

/** Writes to AzureAssignedIdentities. Every method returns the object as the API server answered (normalised). */
export interface AssignedIdentityWriter {
  /** POST a new AAI (with status Created; a CRD with a status subresource drops it, so status is also set separately). */
  create(spec: AssignedSpec, signal: AbortSignal): Promise<AzureAssignedIdentity>;
  /** PUT the AAI's spec and labels, optimistic on `resourceVersion`. */
  replace(ref: AssignedObjectRef, resourceVersion: string, spec: AssignedSpec, signal: AbortSignal): Promise<AzureAssignedIdentity>;
  /**
   * Patch `status.status` the way the CRD allows (status subresource or main resource). Null when the object is gone
   * (checked: a 404 from `/status` alone does not say so); any other failure rejects.
   */
  setState(ref: AssignedObjectRef, state: 'Created' | 'Assigned' | 'Unassigned', signal: AbortSignal): Promise<AzureAssignedIdentity | null>;
  /** DELETE; returns the object when it is still there (held by finalizers), null when it is gone. 404 counts as gone. */
  delete(ref: AssignedObjectRef, signal: AbortSignal): Promise<AzureAssignedIdentity | null>;
  /** Removes our finalizer; returns the object if it still exists afterwards, else null. 404 counts as gone. */
  removeFinalizer(ref: AssignedObjectRef, finalizers: readonly string[], signal: AbortSignal): Promise<AzureAssignedIdentity | null>;
}

/** What MIC's executor and controller use of the per-target ARM workers (arm/worker.ts). */
export type ArmPort = Pick<
  ArmWorkers,
  'onSettled' | 'reconcile' | 'attachments' | 'refresh' | 'holdRemainingMs' | 'heldCount' | 'failure' | 'attached' | 'forget' | 'cancel' | 'idle'
>;

/** The object an Event is about. */
export interface EventSubject {
  readonly apiVersion: string;
  readonly kind: string;
  readonly namespace: string;
  readonly name: string;
  readonly uid: string;
  readonly resourceVersion?: string;
}

/** Kubernetes Events; fire and forget (recording never fails a reconcile). */
export interface EventSink {
  normal(subject: EventSubject, reason: string, message: string): void;
  warning(subject: EventSubject, reason: string, message: string): void;
}

/** The Kubernetes write operations named by the original's error metric. */
export type KubeOperation =
  | 'assigned_identity_addition'
  | 'assigned_identity_deletion'
  | 'assigned_identity_update'
  | 'update_azure_assigned_identity_status';

export interface MicMetrics {
  observeAssigned(kind: 'addition' | 'deletion' | 'update', seconds: number): void;
  kubeError(operation: KubeOperation): void;
  cycle(seconds: number): void;
  newLeader(): void;
  armCall(operation: ArmOperation, seconds: number, failed: boolean): void;
}

/** Event reasons of the original (upstream-behaviour §2.9), plus ours for legacy fields and invalid objects. */
export const Reasons = {
  BindingApplied: 'binding applied',
  BindingApplyError: 'binding apply error',
  StatusUpdateError: 'status update error',
  BindingRemoved: 'binding removed',
  BindingRemoveError: 'binding remove error',
  /** Ours: the object used capitalised legacy field names (normalised, still served). */
  LegacyFields: 'legacy fields',
  /** Ours: an AzureIdentity that cannot be used (bad resource ID, missing client ID, ...); skipped. */
  InvalidIdentity: 'invalid identity',
  /** Ours: a service principal identity whose Secret namespace or adEndpoint the admin's policy refuses; skipped. */
  RefusedIdentity: 'identity refused',
  /** Ours: an AzureIdentityBinding that cannot be used (empty selector, ...); skipped. */
  InvalidBinding: 'invalid binding',
  /** Ours: --namespace-identity-policy=enforce and the namespace's annotation does not permit the identity; skipped. */
  IdentityNotPermitted: 'IdentityNotPermitted',
  /** Ours: ARM reports another client ID for the identity's resourceID than its spec.clientID (IMDS will refuse it). */
  ClientIdMismatch: 'ClientIDMismatch',
} as const;
