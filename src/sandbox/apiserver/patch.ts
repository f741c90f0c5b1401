// PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch for built-in kinds.

import jsonpatch from 'fast-json-patch';
import type { Operation } from 'fast-json-patch';
import { badRequest, ApiError } from './errors.js';
import { clone, isObject, type Json, type JsonObject } from './json.js';

export type PatchType = 'json' | 'merge' | 'strategic' | 'apply';

export const PATCH_MEDIA_TYPES: Record<string, PatchType> = {
  'application/json-patch+json': 'json',
  'application/merge-patch+json': 'merge',
  'application/strategic-merge-patch+json': 'strategic',
  'application/apply-patch+yaml': 'apply',
};

/** Applies a parsed patch body to a copy of `current`; never mutates `current`. */
export function applyPatch(type: Exclude<PatchType, 'apply'>, current: JsonObject, patch: Json): JsonObject {
  switch (type) {
    case 'json':
      return applyJsonPatch(current, patch);
    case 'merge':
      if (!isObject(patch)) throw badRequest('json: cannot unmarshal into Go value of type map[string]interface {}');
      return asPatchedObject(mergePatch(current, patch));
    case 'strategic':
      if (!isObject(patch)) throw badRequest('json: cannot unmarshal into Go value of type map[string]interface {}');
      return strategicMerge(current, patch, []);
  }
}

function applyJsonPatch(current: JsonObject, patch: Json): JsonObject {
  if (!Array.isArray(patch)) {
    throw new ApiError(422, 'Invalid', 'the server rejected our request due to an error in our request', undefined, {
      cause: new Error('json patch body is not an array'),
    });
  }
  const ops: Operation[] = [];
  for (const op of patch) {
    if (!isObject(op) || typeof op.op !== 'string' || typeof op.path !== 'string') {
      throw badRequest(`the server rejected our request due to an error in our request: invalid JSON patch operation`);
    }
    ops.push(op as unknown as Operation);
  }
  try {
    const result = jsonpatch.applyPatch(clone(current), ops, true, true, true);
    return asPatchedObject(result.newDocument as Json);
  } catch (err) {
    const detail = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new ApiError(422, 'Invalid', `the server rejected our request due to an error in our request: ${detail}`, undefined, { cause: err });
  }
}

function asPatchedObject(v: Json): JsonObject {
  if (!isObject(v)) throw badRequest('the patch did not produce an object');
  return v;
}

/** RFC 7386: null deletes, objects merge recursively, anything else replaces. */
export function mergePatch(target: Json | undefined, patch: Json): Json {
  if (!isObject(patch)) return clone(patch);
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

/** Lists merged element-by-element by a key, per field (what the built-in Go structs declare). */
function mergeKeyFor(field: string, path: readonly string[]): string | undefined {
  switch (field) {
    case 'containers':
    case 'initContainers':
    case 'ephemeralContainers':
    case 'volumes':
    case 'env':
    case 'imagePullSecrets':
    case 'volumeDevices':
      return 'name';
    case 'volumeMounts':
      return 'mountPath';
    case 'ports':
      return path.some((p) => p === 'containers' || p === 'initContainers' || p === 'ephemeralContainers')
        ? 'containerPort'
        : 'port';
    case 'conditions':
      return 'type';
    case 'ownerReferences':
      return 'uid';
    case 'hostAliases':
      return 'ip';
    case 'topologySpreadConstraints':
      return 'topologyKey';
    default:
      return undefined;
  }
}

/** Lists of scalars merged as sets (`patchStrategy: merge` on a []string). */
const PRIMITIVE_MERGE_LISTS = new Set(['finalizers']);

const DIRECTIVE_PREFIXES = ['$setElementOrder/', '$deleteFromPrimitiveList/', '$retainKeys'];

function strategicMerge(target: JsonObject, patch: JsonObject, path: readonly string[]): JsonObject {
  if (patch.$patch === 'replace') {
    const { $patch: _drop, ...rest } = patch;
    return stripDirectives(rest);
  }
  if (patch.$patch === 'delete') return {};
  const out: JsonObject = { ...target };
  for (const [k, v] of Object.entries(patch)) {
    if (k === '$patch') continue;
    if (k.startsWith('$deleteFromPrimitiveList/')) {
      const field = k.slice('$deleteFromPrimitiveList/'.length);
      const cur = out[field];
      if (Array.isArray(cur) && Array.isArray(v)) out[field] = cur.filter((x) => !v.some((d) => d === x));
      continue;
    }
    if (DIRECTIVE_PREFIXES.some((p) => k.startsWith(p))) continue;
    if (v === null) {
      delete out[k];
      continue;
    }
    const cur = out[k];
    if (Array.isArray(v)) {
      out[k] = mergeList(k, Array.isArray(cur) ? cur : [], v, [...path, k]);
    } else if (isObject(v)) {
      if (v.$patch === 'delete') delete out[k];
      else out[k] = strategicMerge(isObject(cur) ? cur : {}, v, [...path, k]);
    } else {
      out[k] = v;
    }
  }
  return out;
}

function mergeList(field: string, current: Json[], patch: Json[], path: readonly string[]): Json[] {
  if (patch.some((e) => isObject(e) && e.$patch === 'replace')) {
    return patch.filter((e) => !(isObject(e) && e.$patch === 'replace')).map((e) => (isObject(e) ? stripDirectives(e) : e));
  }
  if (PRIMITIVE_MERGE_LISTS.has(field)) {
    const out = [...current];
    for (const e of patch) if (!out.some((x) => x === e)) out.push(e);
    return out;
  }
  const key = mergeKeyFor(field, path.slice(0, -1));
  if (!key) return patch.map((e) => (isObject(e) ? stripDirectives(e) : e));
  const out = [...current];
  for (const e of patch) {
    if (!isObject(e)) continue;
    const idx = out.findIndex((x) => isObject(x) && x[key] === e[key]);
    if (e.$patch === 'delete') {
      if (idx >= 0) out.splice(idx, 1);
      continue;
    }
    if (idx >= 0) out[idx] = strategicMerge(asObj(out[idx]), e, path);
    else out.push(strategicMerge({}, e, path));
  }
  return out;
}

function asObj(v: Json | undefined): JsonObject {
  return isObject(v) ? v : {};
}

function stripDirectives(o: JsonObject): JsonObject {
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(o)) {
    if (k === '$patch' || DIRECTIVE_PREFIXES.some((p) => k.startsWith(p))) continue;
    out[k] = isObject(v) ? stripDirectives(v) : v;
  }
  return out;
}
