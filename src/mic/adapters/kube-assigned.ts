// AssignedIdentityWriter over the API server's REST paths (adapters/kube-http.ts). Every call first takes a token
// from the shared write RateLimiter (--clientQps/--clientBurst) and answers with the object as the API server
// returned it, normalised, so the controller can overlay its own writes on the cache.
import { API_VERSION, ASSIGNED_IDENTITY_FINALIZER, collectionPath, Kinds, objectPath, Plurals } from '../../crds/names.js';
import { normalizeAssignedIdentity } from '../../crds/normalize.js';
import type {
  AzureAssignedIdentity,
  AzureAssignedIdentityWire,
  AzureIdentity,
  AzureIdentityBinding,
  AzureIdentityBindingWire,
  AzureIdentityWire,
  ObjectMetaWire,
  ObjectView,
} from '../../crds/types.js';
import { httpStatus } from '../../kube/errors.js';
import type { RateLimiter } from '../../kube/ratelimit.js';
import type { AssignedSpec } from '../core/plan.js';
import type { AssignedIdentityWriter, AssignedObjectRef } from '../ports.js';
import type { KubeHttp } from './kube-http.js';

const PLURAL = Plurals.AzureAssignedIdentity;
const MERGE = 'application/merge-patch+json';
const JSON_PATCH = 'application/json-patch+json';

export function kubeAssignedIdentityWriter(http: KubeHttp, limiter: RateLimiter): AssignedIdentityWriter {
  const path = (ref: AssignedObjectRef): string => objectPath(PLURAL, ref.namespace, ref.name);
  const call = async (what: string, ref: AssignedObjectRef, signal: AbortSignal, fn: () => Promise<unknown>): Promise<unknown> => {
    await limiter.acquire(signal);
    try {
      return await fn();
    } catch (err) {
      throw new KubeWriteError(`${what} of AzureAssignedIdentity ${ref.namespace}/${ref.name} failed`, err);
    }
  };

  return {
    async create(spec, signal) {
      const body = assignedIdentityWire(spec, undefined);
      const created = await call('create', spec, signal, () => http.send('POST', collectionPath(PLURAL, spec.namespace), body, undefined, signal));
      return view(created, 'create', spec);
    },

    async replace(ref, resourceVersion, spec, signal) {
      const body = assignedIdentityWire(spec, resourceVersion);
      const replaced = await call('update', ref, signal, () => http.send('PUT', path(ref), body, undefined, signal));
      return view(replaced, 'update', ref);
    },

    async setState(ref, state, signal) {
      const body = { status: { status: state, availableReplicas: 1 } };
      const patched = await call('status update', ref, signal, () => http.send('PATCH', `${path(ref)}/status`, body, MERGE, signal));
      return view(patched, 'status update', ref);
    },

    async delete(ref, signal) {
      let answer: unknown;
      try {
        answer = await call('delete', ref, signal, () => http.send('DELETE', path(ref), undefined, undefined, signal));
      } catch (err) {
        if (isGoneError(err)) return null;
        throw err;
      }
      // A Status body means the object is gone; the object itself means finalizers still hold it.
      const n = normalizeAssignedIdentity(answer);
      return n.value !== null && isAssignedIdentityObject(answer) ? n.value : null;
    },

    async removeFinalizer(ref, finalizers, signal) {
      const index = finalizers.indexOf(ASSIGNED_IDENTITY_FINALIZER);
      if (index < 0) return null;
      // `test` first: if the list changed since we read it, the patch fails (422) instead of removing another entry.
      const body = [
        { op: 'test', path: `/metadata/finalizers/${index}`, value: ASSIGNED_IDENTITY_FINALIZER },
        { op: 'remove', path: `/metadata/finalizers/${index}` },
      ];
      let answer: unknown;
      try {
        answer = await call('finalizer removal', ref, signal, () => http.send('PATCH', path(ref), body, JSON_PATCH, signal));
      } catch (err) {
        if (isGoneError(err)) return null;
        throw err;
      }
      const n = normalizeAssignedIdentity(answer);
      if (n.value === null) return null;
      // Deleting with no finalizer left: the API server removes it now.
      return n.value.deleting && n.value.finalizers.length === 0 ? null : n.value;
    },
  };
}

/** A failed write, with the HTTP status (if any) lifted from the client-node error it wraps. */
export class KubeWriteError extends Error {
  override readonly name = 'KubeWriteError';
  readonly status: number | undefined;
  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.status = httpStatus(cause);
  }
}

/** 404 on a delete or finalizer removal: the object is already gone, which is what we wanted. */
function isGoneError(err: unknown): boolean {
  return err instanceof KubeWriteError && err.status === 404;
}

function isAssignedIdentityObject(v: unknown): boolean {
  return typeof v === 'object' && v !== null && (v as { kind?: unknown }).kind !== 'Status';
}

function view(raw: unknown, what: string, ref: AssignedObjectRef): AzureAssignedIdentity {
  const n = normalizeAssignedIdentity(raw);
  if (n.value === null) {
    throw new Error(`${what} of AzureAssignedIdentity ${ref.namespace}/${ref.name}: the answer is not an AzureAssignedIdentity`);
  }
  return n.value;
}

/** The AAI as MIC writes it: refs embedded in full (camelCase, legacy spellings folded), lower-case `nodename`. */
export function assignedIdentityWire(spec: AssignedSpec, resourceVersion: string | undefined): AzureAssignedIdentityWire {
  return {
    apiVersion: API_VERSION,
    kind: Kinds.AzureAssignedIdentity,
    metadata: {
      name: spec.name,
      namespace: spec.namespace,
      labels: { ...spec.labels },
      finalizers: [...spec.finalizers],
      ...(resourceVersion !== undefined ? { resourceVersion } : {}),
    },
    spec: {
      azureIdentityRef: identityWire(spec.identityRef),
      azureBindingRef: bindingWire(spec.bindingRef),
      pod: spec.pod,
      podNamespace: spec.podNamespace,
      nodename: spec.nodeName,
    },
    status: { status: spec.state, availableReplicas: 1 },
  };
}

function identityWire(id: AzureIdentity): AzureIdentityWire {
  return {
    apiVersion: API_VERSION,
    kind: Kinds.AzureIdentity,
    metadata: metaWire(id),
    spec: {
      type: id.type ?? 0,
      resourceID: id.resourceID,
      clientID: id.clientID,
      ...(id.clientPassword !== null ? { clientPassword: { ...id.clientPassword } } : {}),
      ...(id.tenantID !== '' ? { tenantID: id.tenantID } : {}),
      ...(id.auxiliaryTenantIDs.length > 0 ? { auxiliaryTenantIDs: [...id.auxiliaryTenantIDs] } : {}),
      ...(id.adEndpoint !== '' ? { adEndpoint: id.adEndpoint } : {}),
      ...(id.adResourceID !== '' ? { adResourceID: id.adResourceID } : {}),
    },
  };
}

function bindingWire(b: AzureIdentityBinding): AzureIdentityBindingWire {
  return {
    apiVersion: API_VERSION,
    kind: Kinds.AzureIdentityBinding,
    metadata: metaWire(b),
    spec: {
      azureIdentity: b.azureIdentity,
      selector: b.selector,
      ...(b.weight !== null ? { weight: b.weight } : {}),
    },
  };
}

/** The match rule compares resourceVersions of the embedded refs, so they are kept. */
function metaWire(o: ObjectView): ObjectMetaWire {
  return {
    name: o.name,
    namespace: o.namespace,
    ...(o.uid !== '' ? { uid: o.uid } : {}),
    ...(o.resourceVersion !== '' ? { resourceVersion: o.resourceVersion } : {}),
    ...(Object.keys(o.labels).length > 0 ? { labels: { ...o.labels } } : {}),
    ...(Object.keys(o.annotations).length > 0 ? { annotations: { ...o.annotations } } : {}),
  };
}
