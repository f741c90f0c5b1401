// AssignedIdentityWriter over the API server's REST paths (src/kube/http.ts). Every call first takes a token
// from the shared write RateLimiter (--clientQps/--clientBurst) and answers with the object as the API server
// returned it, normalised, so the controller can overlay its own writes on the cache.
//
// Status goes where the installed CRD allows: through `/status` when the AAI CRD declares the status subresource
// (ours), on the main resource when it does not (the original's CRD, which Helm never upgrades). Which one is learnt
// from discovery (`azureassignedidentities/status` listed or not), at start and again whenever a write shows the
// CRD changed: a 404 from `/status` for an object that exists, or a main-resource patch whose status did not stick.
import type { Logger } from 'pino';
import { API_VERSION, ASSIGNED_IDENTITY_FINALIZER, collectionPath, GROUP, Kinds, objectPath, Plurals, VERSION } from '../../crds/names.js';
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
import type { KubeHttp } from '../../kube/http.js';

const PLURAL = Plurals.AzureAssignedIdentity;
const MERGE = 'application/merge-patch+json';
const JSON_PATCH = 'application/json-patch+json';

/** How status.status is written: through the status subresource, or as part of the main resource. */
export type StatusRoute = 'subresource' | 'main';

/** Learns from discovery whether the AzureAssignedIdentity CRD has a status subresource. */
export class AssignedStatusRoute {
  #route: StatusRoute | undefined;
  #pending: Promise<StatusRoute> | undefined;

  constructor(
    private readonly http: KubeHttp,
    private readonly log?: Logger,
  ) {}

  /** The route last learnt (undefined before the first discovery). */
  get current(): StatusRoute | undefined {
    return this.#route;
  }

  /** The known route, discovering it first if needed. */
  get(signal?: AbortSignal): Promise<StatusRoute> {
    return this.#route !== undefined ? Promise.resolve(this.#route) : this.discover(signal);
  }

  /** Reads `/apis/aadpodidentity.k8s.io/v1` again; concurrent callers share one request. */
  discover(signal?: AbortSignal): Promise<StatusRoute> {
    this.#pending ??= (async () => {
      try {
        const list = await this.http.send('GET', `/apis/${GROUP}/${VERSION}`, undefined, undefined, signal);
        const names = resourceNames(list);
        if (!names.includes(PLURAL)) {
          throw new Error(`discovery of ${GROUP}/${VERSION} does not list ${PLURAL}: is the AzureAssignedIdentity CRD installed?`);
        }
        const route: StatusRoute = names.includes(`${PLURAL}/status`) ? 'subresource' : 'main';
        if (route !== this.#route) {
          this.log?.info(
            { statusRoute: route },
            route === 'main'
              ? 'the AzureAssignedIdentity CRD has no status subresource (the original\'s CRD): writing status.status on the main resource'
              : 'the AzureAssignedIdentity CRD has a status subresource: writing status.status through /status',
          );
        }
        this.#route = route;
        return route;
      } finally {
        this.#pending = undefined;
      }
    })();
    return this.#pending;
  }
}

function resourceNames(list: unknown): string[] {
  const resources = (list as { resources?: unknown } | null)?.resources;
  if (!Array.isArray(resources)) return [];
  return resources.map((r) => (r as { name?: unknown } | null)?.name).filter((n): n is string => typeof n === 'string');
}

export function kubeAssignedIdentityWriter(http: KubeHttp, limiter: RateLimiter, route: AssignedStatusRoute = new AssignedStatusRoute(http)): AssignedIdentityWriter {
  const path = (ref: AssignedObjectRef): string => objectPath(PLURAL, ref.namespace, ref.name);
  const exists = async (ref: AssignedObjectRef, signal: AbortSignal): Promise<boolean> => {
    try {
      await call('read', ref, signal, () => http.send('GET', path(ref), undefined, undefined, signal));
      return true;
    } catch (err) {
      if (isGoneError(err)) return false;
      throw err;
    }
  };
  // One status write by the given route; 'rediscover' when the answer shows the CRD is not what we thought.
  const writeStatus = async (
    ref: AssignedObjectRef, state: string, how: StatusRoute, signal: AbortSignal,
  ): Promise<AzureAssignedIdentity | null | 'rediscover'> => {
    const body = { status: { status: state, availableReplicas: 1 } };
    if (how === 'subresource') {
      try {
        const patched = await call('status update', ref, signal, () => http.send('PATCH', `${path(ref)}/status`, body, MERGE, signal));
        return view(patched, 'status update', ref);
      } catch (err) {
        if (!isGoneError(err)) throw err;
        // 404 from /status: either the object is gone, or the CRD has no status subresource (any more).
        return (await exists(ref, signal)) ? 'rediscover' : null;
      }
    }
    let patched: unknown;
    try {
      patched = await call('status update', ref, signal, () => http.send('PATCH', path(ref), body, MERGE, signal));
    } catch (err) {
      if (isGoneError(err)) return null;
      throw err;
    }
    const obj = view(patched, 'status update', ref);
    // With a status subresource the main resource ignores status: the CRD gained one since discovery.
    return obj.state === state ? obj : 'rediscover';
  };
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
      const first = await route.get(signal);
      const answer = await writeStatus(ref, state, first, signal);
      if (answer !== 'rediscover') return answer;
      const again = await route.discover(signal);
      if (again !== first) {
        const retried = await writeStatus(ref, state, again, signal);
        if (retried !== 'rediscover') return retried;
      }
      throw new KubeWriteError(
        `status update of AzureAssignedIdentity ${ref.namespace}/${ref.name} failed: the object exists but its status did not change ` +
          `through ${first === 'subresource' ? '/status' : 'the main resource'}, and discovery says the CRD ${again === 'main' ? 'has no' : 'has a'} status subresource`,
        undefined,
      );
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
      // Only Federated is written: an Attached copy stays byte-for-byte what the original wrote.
      ...(id.mode === 'Federated' ? { mode: id.mode } : {}),
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
