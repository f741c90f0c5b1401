// One reconcile cycle, as controller-runtime's Reconcile: one snapshot (caches + our own writes + what the ARM
// workers know ARM holds) → computeDesired → plan → executor, which hands ARM changes to the per-target workers
// and names the AAI keys whose Kubernetes writes the work queue should carry out now.
// Skips come back as data: invalid identities/bindings and legacy field names become Warning events once per
// object version, everything else one log line per distinct reason.
import { LRUCache } from 'lru-cache';
import type { Logger } from 'pino';
import { realClock, type Clock } from '../common/clock.js';
import { API_VERSION, Kinds } from '../crds/names.js';
import type { AzureAssignedIdentity, AzureIdentity, AzureIdentityBinding, PodView } from '../crds/types.js';
import { computeDesired, type DesiredState } from './core/desired.js';
import { desiredFederatedCredentials, federatedUses } from './core/federation.js';
import { isEmptyPlan, plan, type Plan } from './core/plan.js';
import type { Skip } from './core/skip.js';
import type { ClusterSnapshot, MicPolicy } from './core/snapshot.js';
import type { ExecutionOutcome, Executor } from './executor.js';
import type { FederationRunner } from './federation/runner.js';
import { Reasons, type ArmPort, type EventSink, type EventSubject, type MicMetrics } from './ports.js';

/** The cluster as the controller's caches see it right now, our own writes included. */
export interface ClusterView {
  /** A snapshot for plan(); `attachments` is filled by the reconciler. */
  snapshot(): Omit<ClusterSnapshot, 'attachments'>;
  /** AAIs by key, as in the snapshot. */
  readonly assignedByKey: ReadonlyMap<string, AzureAssignedIdentity>;
  /** Identities and bindings that used legacy field names. */
  legacy(): Iterable<{ readonly object: AzureIdentity | AzureIdentityBinding; readonly kind: 'AzureIdentity' | 'AzureIdentityBinding'; readonly fields: readonly string[] }>;
  identity(namespace: string, name: string): AzureIdentity | undefined;
  binding(namespace: string, name: string): AzureIdentityBinding | undefined;
  pod(namespace: string, name: string): PodView | undefined;
}

export interface ReconcilerOptions {
  readonly executor: Executor;
  /** What the ARM workers know ARM holds. */
  readonly arm: Pick<ArmPort, 'attachments'>;
  readonly events: EventSink;
  readonly metrics: MicMetrics;
  readonly policy: MicPolicy;
  readonly log: Logger;
  readonly clock?: Clock;
  /** Federated mode's credential writer (--enable-federated-identities with a known issuer); absent: off. */
  readonly federation?: FederationRunner;
}

export interface CycleResult {
  readonly plan: Plan;
  readonly stats: ExecutionOutcome;
  readonly durationMs: number;
}

/** Bound on what the spam filters remember; the least recently seen is forgotten first. */
const MAX_REMEMBERED = 20_000;

export class Reconciler {
  readonly #o: ReconcilerOptions;
  readonly #clock: Clock;
  /** Warning events already sent, by `kind/ns/name@resourceVersion/reason`. */
  readonly #warned = new LRUCache<string, true>({ max: MAX_REMEMBERED });
  /** Skips already logged, by subject + code + reason. */
  readonly #logged = new LRUCache<string, true>({ max: MAX_REMEMBERED });
  #idleCycles = 0;

  constructor(opts: ReconcilerOptions) {
    this.#o = opts;
    this.#clock = opts.clock ?? realClock;
  }

  cycle(view: ClusterView, signal: AbortSignal): CycleResult {
    const started = this.#clock.now();
    const base = view.snapshot();
    const targetOf = new Map<string, string>();
    for (const n of base.nodes) if (n.target !== undefined) targetOf.set(n.name, n.target.key);
    const federation = this.#o.federation;
    const snapshot: ClusterSnapshot = {
      ...base,
      attachments: this.#o.arm.attachments(new Set(targetOf.values())),
      ...(federation !== undefined ? { federation: federation.state() } : {}),
    };
    const desired = computeDesired(snapshot, this.#o.policy);
    if (federation !== undefined) this.#federate(federation, view, snapshot, desired);
    const p = plan(snapshot, desired, this.#o.policy);
    this.#report(view, p.skipped, desired);
    this.#warnLegacy(view);
    const stats = this.#o.executor.apply(p, { signal, assigned: view.assignedByKey, targetOfNode: (n) => targetOf.get(n) ?? '' });
    const durationMs = this.#clock.now() - started;
    const empty = isEmptyPlan(p);
    // As the original: report work cycles, and every 1000th idle one.
    if (!empty || ++this.#idleCycles % 1000 === 0) this.#o.metrics.cycle(durationMs / 1000);
    if (!empty) {
      this.#o.log.info(
        {
          durationMs,
          pods: snapshot.pods.length,
          assigned: snapshot.assigned.length,
          create: p.createAssigned.length,
          update: p.updateAssigned.length,
          delete: p.deleteAssigned.length,
          status: p.statusUpdates.length,
          targetOps: p.targetOps.length,
          tasks: stats.keys.length,
          busy: stats.busySkipped,
          deferred: stats.deferred,
          armCalls: stats.armCalls,
          heldTargets: stats.heldTargets,
        },
        'reconcile cycle',
      );
    }
    return { plan: p, stats, durationMs };
  }

  /** Hands the writer the credentials that this cycle's assignments (tenant rules applied) need, and only those. */
  #federate(federation: FederationRunner, view: ClusterView, snapshot: ClusterSnapshot, desired: DesiredState): void {
    const podOf = (namespace: string, name: string): PodView | undefined => {
      const pod = view.pod(namespace, name);
      // The API server defaults spec.serviceAccountName to `default`; a view without one means that.
      return pod === undefined || (pod.serviceAccountName ?? '') !== '' ? pod : { ...pod, serviceAccountName: 'default' };
    };
    const { uses } = federatedUses(desired.assignments, podOf);
    federation.want(desiredFederatedCredentials(federation.issuer, snapshot.identities, uses));
  }

  #report(view: ClusterView, skips: readonly Skip[], desired: DesiredState): void {
    let byKey: Map<string, DesiredState['assignments'][number]> | undefined;
    for (const s of skips) {
      const { kind, namespace, name } = s.subject;
      if (s.code === 'FederationDisabled' || s.code === 'FederationIssuerUnknown') {
        const obj = view.identity(namespace, name);
        if (obj !== undefined) this.#warnOnce(subjectOf('AzureIdentity', obj), s.code, `AzureIdentity ${namespace}/${name} is not assigned: ${s.reason}`);
        continue;
      }
      if (s.code === 'FederatedCredentialLimit' || s.code === 'FederatedCredentialFailed') {
        // The skip names the AAI; the events go where its users look: the identity and the pod.
        byKey ??= new Map(desired.assignments.map((d) => [d.key, d]));
        const d = byKey.get(`${namespace}/${name}`);
        if (d === undefined) continue;
        const message = `identity ${d.identity.namespace}/${d.identity.name} is not federated for pod ${d.podNamespace}/${d.pod}: ${s.reason}`;
        this.#warnOnce(subjectOf('AzureIdentity', d.identity), s.code, message);
        const pod = view.pod(d.podNamespace, d.pod);
        if (pod !== undefined) this.#warnOnce(podSubject(pod), s.code, message);
        continue;
      }
      if (s.code === 'IdentityInvalid' || s.code === 'BindingInvalid') {
        const obj = s.code === 'IdentityInvalid' ? view.identity(namespace, name) : view.binding(namespace, name);
        if (obj === undefined) continue;
        const reason = s.code === 'IdentityInvalid' ? Reasons.InvalidIdentity : Reasons.InvalidBinding;
        this.#warnOnce(subjectOf(kind === 'AzureIdentity' ? 'AzureIdentity' : 'AzureIdentityBinding', obj), reason,
          `${kind} ${namespace}/${name} is ignored: ${s.reason}`);
        continue;
      }
      if (s.code === 'CrossNamespaceSecret' || s.code === 'AdEndpointNotAllowed') {
        const obj = view.identity(namespace, name);
        if (obj === undefined) continue;
        this.#warnOnce(subjectOf('AzureIdentity', obj), Reasons.RefusedIdentity, `AzureIdentity ${namespace}/${name} is not assigned: ${s.reason}`);
        continue;
      }
      if (s.code === 'IdentityNotPermitted') {
        // The tenant sees why in its own namespace; the message tells what a cluster admin would add.
        const subject =
          kind === 'AzureIdentity' ? optional(view.identity(namespace, name), (o) => subjectOf('AzureIdentity', o))
          : kind === 'Pod' ? optional(view.pod(namespace, name), podSubject)
          : undefined;
        if (subject !== undefined) this.#warnOnce(subject, Reasons.IdentityNotPermitted, `${kind} ${namespace}/${name} gets no identity: ${s.reason}`);
        continue;
      }
      const key = `${kind}/${namespace}/${name}/${s.code}/${s.reason}`;
      if (this.#logged.get(key) !== undefined) continue;
      this.#logged.set(key, true);
      const level = s.code === 'NodeWithoutTarget' || s.code === 'NameConflict' || s.code === 'IdentityNotFound' ? 'warn' : 'debug';
      this.#o.log[level]({ kind, namespace, name, code: s.code, reason: s.reason }, 'skipped');
    }
  }

  #warnLegacy(view: ClusterView): void {
    for (const { object, kind, fields } of view.legacy()) {
      this.#warnOnce(subjectOf(kind, object), Reasons.LegacyFields,
        `${kind} ${object.namespace}/${object.name} uses legacy field names (${fields.join(', ')}); they were read as the camelCase fields. ` +
          'Rename them: camelCase wins when both are set.');
    }
  }

  #warnOnce(subject: EventSubject, reason: string, message: string): void {
    const key = `${subject.kind}/${subject.namespace}/${subject.name}@${subject.uid}/${subject.resourceVersion ?? ''}/${reason}/${message}`;
    if (this.#warned.get(key) !== undefined) return;
    this.#warned.set(key, true);
    this.#o.log.warn({ kind: subject.kind, namespace: subject.namespace, name: subject.name, reason }, message);
    this.#o.events.warning(subject, reason, message);
  }
}

function optional<T, R>(value: T | undefined, f: (v: T) => R): R | undefined {
  return value === undefined ? undefined : f(value);
}

/** Pods by uid only: a status change bumps the resourceVersion, and must not repeat the event. */
function podSubject(p: PodView): EventSubject {
  return { apiVersion: 'v1', kind: 'Pod', namespace: p.namespace, name: p.name, uid: p.uid };
}

function subjectOf(kind: 'AzureIdentity' | 'AzureIdentityBinding', o: AzureIdentity | AzureIdentityBinding): EventSubject {
  return { apiVersion: API_VERSION, kind: Kinds[kind], namespace: o.namespace, name: o.name, uid: o.uid, resourceVersion: o.resourceVersion };
}
