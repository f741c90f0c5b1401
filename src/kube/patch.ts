// Patch helpers over client-node. In client-node 2.x a patch call defaults to JSON Patch
// (application/json-patch+json); any other type must be chosen per call with setHeaderOptions.
import { PatchStrategy, setHeaderOptions, type CustomObjectsApi } from '@kubernetes/client-node';
import jsonpatch from 'fast-json-patch';

export interface CustomObjectRef {
  readonly group: string;
  readonly version: string;
  readonly plural: string;
  /** Omit for cluster-scoped resources. */
  readonly namespace?: string;
  readonly name: string;
}

export interface JsonPatchOp {
  readonly op: 'add' | 'remove' | 'replace' | 'move' | 'copy' | 'test';
  readonly path: string;
  readonly value?: unknown;
  readonly from?: string;
}

export type PatchType = 'merge' | 'json' | 'strategic';

/** Options argument for any typed client-node patch call, e.g. `core.patchNamespacedPod(req, patchOptions('merge'))`. */
export function patchOptions(type: PatchType): ReturnType<typeof setHeaderOptions> {
  const contentType =
    type === 'merge' ? PatchStrategy.MergePatch : type === 'json' ? PatchStrategy.JsonPatch : PatchStrategy.StrategicMergePatch;
  return setHeaderOptions('Content-Type', contentType);
}

/** RFC 7386 merge patch of a custom object. Returns the patched object (plain JSON). */
export function mergePatchCustomObject(api: CustomObjectsApi, ref: CustomObjectRef, patch: Record<string, unknown>): Promise<unknown> {
  return patchCustomObject(api, ref, patch, 'merge', false);
}

/** RFC 6902 JSON patch of a custom object. */
export function jsonPatchCustomObject(api: CustomObjectsApi, ref: CustomObjectRef, ops: readonly JsonPatchOp[]): Promise<unknown> {
  return patchCustomObject(api, ref, ops, 'json', false);
}

/** Merge patch of the status subresource (`.../<name>/status`), which ignores changes outside `status`. */
export function mergePatchCustomObjectStatus(api: CustomObjectsApi, ref: CustomObjectRef, patch: Record<string, unknown>): Promise<unknown> {
  return patchCustomObject(api, ref, patch, 'merge', true);
}

/** JSON patch of the status subresource. */
export function jsonPatchCustomObjectStatus(api: CustomObjectsApi, ref: CustomObjectRef, ops: readonly JsonPatchOp[]): Promise<unknown> {
  return patchCustomObject(api, ref, ops, 'json', true);
}

async function patchCustomObject(
  api: CustomObjectsApi,
  ref: CustomObjectRef,
  body: unknown,
  type: 'merge' | 'json',
  status: boolean,
): Promise<unknown> {
  const opts = patchOptions(type);
  const { group, version, plural, name, namespace } = ref;
  try {
    if (namespace) {
      const req = { group, version, plural, namespace, name, body: body as object };
      return await (status ? api.patchNamespacedCustomObjectStatus(req, opts) : api.patchNamespacedCustomObject(req, opts));
    }
    const req = { group, version, plural, name, body: body as object };
    return await (status ? api.patchClusterCustomObjectStatus(req, opts) : api.patchClusterCustomObject(req, opts));
  } catch (err) {
    const where = `${plural}.${group} ${namespace ? `${namespace}/` : ''}${name}${status ? '/status' : ''}`;
    throw new Error(`${type} patch of ${where} failed`, { cause: err });
  }
}

/** JSON patch turning `from` into `to`; an empty array means there is nothing to send. */
export function jsonPatchBetween(from: object, to: object): JsonPatchOp[] {
  return jsonpatch.compare(from, to) as JsonPatchOp[];
}

/**
 * Merge patch turning `from` into `to` (RFC 7386: changed keys, `null` for removed ones, arrays replaced whole);
 * `undefined` when they are equal, so callers can skip a no-op PATCH.
 */
export function mergePatchBetween(from: Record<string, unknown>, to: Record<string, unknown>): Record<string, unknown> | undefined {
  const patch: Record<string, unknown> = {};
  for (const key of Object.keys(from)) {
    if (!(key in to) || to[key] === undefined) {
      if (from[key] !== undefined) patch[key] = null;
    }
  }
  for (const [key, value] of Object.entries(to)) {
    if (value === undefined) continue;
    const old = from[key];
    if (isPlainObject(old) && isPlainObject(value)) {
      const sub = mergePatchBetween(old, value);
      if (sub !== undefined) patch[key] = sub;
    } else if (!deepEqual(old, value)) {
      patch[key] = value;
    }
  }
  return Object.keys(patch).length === 0 ? undefined : patch;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((v, i) => deepEqual(v, b[i]));
  if (isPlainObject(a) && isPlainObject(b)) {
    const ka = Object.keys(a).filter((k) => a[k] !== undefined);
    const kb = Object.keys(b).filter((k) => b[k] !== undefined);
    return ka.length === kb.length && ka.every((k) => deepEqual(a[k], b[k]));
  }
  return false;
}
