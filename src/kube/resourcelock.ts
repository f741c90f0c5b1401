// The objects leader election writes its record to, as client-go's resourcelock package: a Lease
// (coordination.k8s.io/v1, the record in its spec) and an Endpoints object (core/v1, the record as JSON in the
// annotation `control-plane.alpha.kubernetes.io/leader`), which is what the original MIC (client-go 0.23,
// EndpointsResourceLock) uses. Each lock remembers the object it last read, so that an update is optimistic on that
// resourceVersion (409 if anyone wrote in between).
import type { V1Endpoints, V1Lease } from '@kubernetes/client-node';
import { V1MicroTime } from '@kubernetes/client-node/dist/types.js';
import { isNotFound } from './errors.js';
import type { KubeHttp } from './http.js';

/** client-go's LeaderElectionRecord, with times in epoch milliseconds (undefined = unset). */
export interface LeaderElectionRecord {
  readonly holderIdentity: string;
  readonly leaseDurationSeconds: number;
  readonly acquireTime: number | undefined;
  readonly renewTime: number | undefined;
  readonly leaderTransitions: number;
}

/** What a lock read: the record and its serialised form (a changed `raw` means someone wrote). */
export interface ObservedRecord {
  readonly record: LeaderElectionRecord;
  readonly raw: string;
}

export interface ResourceLock {
  /** `Lease ns/name` or `Endpoints ns/name`, for logs. */
  readonly description: string;
  /** The record, or null when the object does not exist. Rejects when the record cannot be read or parsed. */
  get(): Promise<ObservedRecord | null>;
  /** Creates the object (409 AlreadyExists if someone did first). */
  create(record: LeaderElectionRecord): Promise<void>;
  /** Replaces the record on the object last read by get(), optimistic on its resourceVersion (409 if stale). */
  update(record: LeaderElectionRecord): Promise<void>;
}

/** The part of `CoordinationV1Api` used here (a `CoordinationV1Api` instance satisfies it). */
export interface LeaseClient {
  readNamespacedLease(param: { name: string; namespace: string }): Promise<V1Lease>;
  createNamespacedLease(param: { namespace: string; body: V1Lease }): Promise<V1Lease>;
  replaceNamespacedLease(param: { name: string; namespace: string; body: V1Lease }): Promise<V1Lease>;
}

/** The part of `CoreV1Api` used here (a `CoreV1Api` instance satisfies it). */
export interface EndpointsClient {
  readNamespacedEndpoints(param: { name: string; namespace: string }): Promise<V1Endpoints>;
  createNamespacedEndpoints(param: { namespace: string; body: V1Endpoints }): Promise<V1Endpoints>;
  replaceNamespacedEndpoints(param: { name: string; namespace: string; body: V1Endpoints }): Promise<V1Endpoints>;
}

/** client-go's resourcelock.LeaderElectionRecordAnnotationKey. */
export const LEADER_ANNOTATION = 'control-plane.alpha.kubernetes.io/leader';

export class LeaseLock implements ResourceLock {
  readonly description: string;
  #last: V1Lease | undefined;

  constructor(
    private readonly client: LeaseClient,
    private readonly namespace: string,
    private readonly name: string,
  ) {
    this.description = `Lease ${namespace}/${name}`;
  }

  async get(): Promise<ObservedRecord | null> {
    let lease: V1Lease;
    try {
      lease = await this.client.readNamespacedLease({ name: this.name, namespace: this.namespace });
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
    this.#last = lease;
    const s = lease.spec ?? {};
    const record: LeaderElectionRecord = {
      holderIdentity: s.holderIdentity ?? '',
      leaseDurationSeconds: s.leaseDurationSeconds ?? 0,
      acquireTime: parseTime(s.acquireTime),
      renewTime: parseTime(s.renewTime),
      leaderTransitions: s.leaseTransitions ?? 0,
    };
    return { record, raw: JSON.stringify(record) };
  }

  async create(record: LeaderElectionRecord): Promise<void> {
    const body: V1Lease = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      metadata: { name: this.name, namespace: this.namespace },
      spec: leaseSpec(undefined, record),
    };
    this.#last = await this.client.createNamespacedLease({ namespace: this.namespace, body });
  }

  async update(record: LeaderElectionRecord): Promise<void> {
    const current = this.#last;
    if (current === undefined) throw new Error(`${this.description}: update before get`);
    const body: V1Lease = {
      apiVersion: 'coordination.k8s.io/v1',
      kind: 'Lease',
      // Keep labels/annotations and the resourceVersion (optimistic concurrency) of what we read.
      metadata: { ...current.metadata, name: this.name, namespace: this.namespace },
      spec: leaseSpec(current.spec, record),
    };
    this.#last = await this.client.replaceNamespacedLease({ name: this.name, namespace: this.namespace, body });
  }
}

function leaseSpec(current: V1Lease['spec'], r: LeaderElectionRecord): NonNullable<V1Lease['spec']> {
  return {
    ...current,
    holderIdentity: r.holderIdentity,
    leaseDurationSeconds: r.leaseDurationSeconds,
    // MicroTime serialises with 6 fraction digits, as the API server's RFC3339Micro expects.
    ...(r.acquireTime !== undefined ? { acquireTime: new V1MicroTime(r.acquireTime) } : {}),
    ...(r.renewTime !== undefined ? { renewTime: new V1MicroTime(r.renewTime) } : {}),
    leaseTransitions: r.leaderTransitions,
  };
}

export class EndpointsLock implements ResourceLock {
  readonly description: string;
  #last: V1Endpoints | undefined;

  constructor(
    private readonly client: EndpointsClient,
    private readonly namespace: string,
    private readonly name: string,
  ) {
    this.description = `Endpoints ${namespace}/${name}`;
  }

  async get(): Promise<ObservedRecord | null> {
    let ep: V1Endpoints;
    try {
      ep = await this.client.readNamespacedEndpoints({ name: this.name, namespace: this.namespace });
    } catch (err) {
      if (isNotFound(err)) return null;
      throw err;
    }
    this.#last = ep;
    const raw = ep.metadata?.annotations?.[LEADER_ANNOTATION];
    // No annotation: an empty record, which anyone may take (as client-go).
    if (raw === undefined) return { record: EMPTY_RECORD, raw: '' };
    return { record: parseEndpointsRecord(raw, this.description), raw };
  }

  async create(record: LeaderElectionRecord): Promise<void> {
    const body: V1Endpoints = {
      apiVersion: 'v1',
      kind: 'Endpoints',
      metadata: { name: this.name, namespace: this.namespace, annotations: { [LEADER_ANNOTATION]: endpointsRecordJson(record) } },
    };
    this.#last = await this.client.createNamespacedEndpoints({ namespace: this.namespace, body });
  }

  async update(record: LeaderElectionRecord): Promise<void> {
    const current = this.#last;
    if (current === undefined) throw new Error(`${this.description}: update before get`);
    const body: V1Endpoints = {
      ...current,
      apiVersion: 'v1',
      kind: 'Endpoints',
      metadata: {
        ...current.metadata,
        name: this.name,
        namespace: this.namespace,
        annotations: { ...current.metadata?.annotations, [LEADER_ANNOTATION]: endpointsRecordJson(record) },
      },
    };
    this.#last = await this.client.replaceNamespacedEndpoints({ name: this.name, namespace: this.namespace, body });
  }
}

const EMPTY_RECORD: LeaderElectionRecord = { holderIdentity: '', leaseDurationSeconds: 0, acquireTime: undefined, renewTime: undefined, leaderTransitions: 0 };

/**
 * The record as client-go's json tags and metav1.Time write it: RFC3339 in UTC with whole seconds, null when unset.
 * The original MIC parses exactly this, so it sees our hold as we see its.
 */
export function endpointsRecordJson(r: LeaderElectionRecord): string {
  const time = (ms: number | undefined): string | null => (ms === undefined ? null : new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z'));
  return JSON.stringify({
    holderIdentity: r.holderIdentity,
    leaseDurationSeconds: r.leaseDurationSeconds,
    acquireTime: time(r.acquireTime),
    renewTime: time(r.renewTime),
    leaderTransitions: r.leaderTransitions,
  });
}

/** Parses the annotation; rejects on anything client-go would not decode (then nobody may take the lock). */
export function parseEndpointsRecord(raw: string, where: string): LeaderElectionRecord {
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch (err) {
    throw new Error(`${where}: annotation ${LEADER_ANNOTATION} is not JSON`, { cause: err });
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error(`${where}: annotation ${LEADER_ANNOTATION} is not a JSON object`);
  const o = v as Record<string, unknown>;
  const str = (k: string): string => {
    const x = o[k];
    if (x === undefined || x === null) return '';
    if (typeof x !== 'string') throw new Error(`${where}: ${LEADER_ANNOTATION} ${k} is not a string`);
    return x;
  };
  const int = (k: string): number => {
    const x = o[k];
    if (x === undefined || x === null) return 0;
    if (typeof x !== 'number' || !Number.isInteger(x)) throw new Error(`${where}: ${LEADER_ANNOTATION} ${k} is not an integer`);
    return x;
  };
  const time = (k: string): number | undefined => {
    const s = str(k);
    if (s === '') return undefined;
    const t = Date.parse(s);
    if (Number.isNaN(t)) throw new Error(`${where}: ${LEADER_ANNOTATION} ${k} is not an RFC3339 time`);
    return t;
  };
  return {
    holderIdentity: str('holderIdentity'),
    leaseDurationSeconds: int('leaseDurationSeconds'),
    acquireTime: time('acquireTime'),
    renewTime: time('renewTime'),
    leaderTransitions: int('leaderTransitions'),
  };
}

/** Reads a (Micro)Time field that client-node may hand back as a string (MicroTime is not deserialised) or a Date. */
export function parseTime(v: unknown): number | undefined {
  if (v instanceof Date) return Number.isNaN(v.getTime()) ? undefined : v.getTime();
  if (typeof v === 'string' && v !== '') {
    const t = Date.parse(v);
    return Number.isNaN(t) ? undefined : t;
  }
  return undefined;
}

/** The Lease calls over raw HTTP (no typed client: client-node's typed APIs load its whole generated API). */
export function leaseClient(http: KubeHttp): LeaseClient {
  const path = (ns: string, name?: string): string =>
    `/apis/coordination.k8s.io/v1/namespaces/${encodeURIComponent(ns)}/leases${name !== undefined ? `/${encodeURIComponent(name)}` : ''}`;
  return {
    readNamespacedLease: async (p) => (await http.send('GET', path(p.namespace, p.name))) as V1Lease,
    createNamespacedLease: async (p) => (await http.send('POST', path(p.namespace), p.body)) as V1Lease,
    replaceNamespacedLease: async (p) => (await http.send('PUT', path(p.namespace, p.name), p.body)) as V1Lease,
  };
}

/** The Endpoints calls over raw HTTP. */
export function endpointsClient(http: KubeHttp): EndpointsClient {
  const path = (ns: string, name?: string): string =>
    `/api/v1/namespaces/${encodeURIComponent(ns)}/endpoints${name !== undefined ? `/${encodeURIComponent(name)}` : ''}`;
  return {
    readNamespacedEndpoints: async (p) => (await http.send('GET', path(p.namespace, p.name))) as V1Endpoints,
    createNamespacedEndpoints: async (p) => (await http.send('POST', path(p.namespace), p.body)) as V1Endpoints,
    replaceNamespacedEndpoints: async (p) => (await http.send('PUT', path(p.namespace, p.name), p.body)) as V1Endpoints,
  };
}
