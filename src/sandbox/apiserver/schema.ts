// Structural-schema semantics of CRDs: pruning, defaulting and validation (with ajv), with real error wording.

import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import type { StatusCause } from './errors.js';
import { clone, isObject, type Json, type JsonObject } from './json.js';
import { isObjectMetaField } from './objects.js';

export interface CustomSchema {
  /** Drops fields the schema does not declare (in place); returns the dotted paths it dropped. */
  prune(obj: JsonObject): string[];
  /** Fills `default`s of declared properties (in place). */
  applyDefaults(obj: JsonObject): void;
  /** Causes in the wording of the real server; empty when valid. */
  validate(obj: JsonObject): StatusCause[];
}

const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false, validateSchema: false });

/** Compiles one version's `openAPIV3Schema`. Throws (with cause) if ajv cannot compile it. */
export function compileSchema(openAPIV3Schema: JsonObject): CustomSchema {
  let validateFn: ValidateFunction;
  try {
    const converted = toAjvSchema(withoutRootMetadata(openAPIV3Schema));
    validateFn = ajv.compile(isObject(converted) ? converted : {});
  } catch (err) {
    throw new Error(`cannot compile openAPIV3Schema`, { cause: err });
  }
  return {
    prune(obj) {
      const dropped: string[] = [];
      pruneNode(obj, openAPIV3Schema, '', true, dropped);
      return dropped;
    },
    applyDefaults(obj) {
      defaultNode(obj, openAPIV3Schema, true);
    },
    validate(obj) {
      if (validateFn(obj)) return [];
      return (validateFn.errors ?? []).map((e) => toCause(e, obj));
    },
  };
}

function withoutRootMetadata(schema: JsonObject): JsonObject {
  if (!isObject(schema.properties) || !('metadata' in schema.properties)) return schema;
  const { metadata: _metadata, ...props } = schema.properties;
  return { ...schema, properties: props };
}

const ROOT_KEEP = new Set(['apiVersion', 'kind', 'metadata']);

function pruneNode(value: Json, schema: JsonObject, path: string, root: boolean, dropped: string[]): void {
  const preserve = schema['x-kubernetes-preserve-unknown-fields'] === true;
  const embedded = schema['x-kubernetes-embedded-resource'] === true;
  if (Array.isArray(value)) {
    const items = schema.items;
    if (isObject(items)) value.forEach((v, i) => pruneNode(v, items, `${path}[${i}]`, false, dropped));
    return;
  }
  if (!isObject(value)) return;
  const props = isObject(schema.properties) ? schema.properties : undefined;
  const additional = schema.additionalProperties;
  for (const key of Object.keys(value)) {
    const child = value[key] as Json;
    const childPath = path ? `${path}.${key}` : key;
    if ((root || embedded) && ROOT_KEEP.has(key)) {
      // An embedded object's metadata is decoded as ObjectMeta, whatever its schema says.
      if (key === 'metadata' && !root && isObject(child)) {
        for (const mk of Object.keys(child)) if (!isObjectMetaField(mk)) delete child[mk];
      }
      continue;
    }
    const declared = props && isObject(props[key]) ? props[key] : undefined;
    if (declared) pruneNode(child, declared, childPath, false, dropped);
    else if (isObject(additional)) pruneNode(child, additional, childPath, false, dropped);
    else if (additional === true || preserve) continue;
    else {
      delete value[key];
      dropped.push(childPath);
    }
  }
}

function defaultNode(value: Json, schema: JsonObject, root: boolean): void {
  if (Array.isArray(value)) {
    const items = schema.items;
    if (isObject(items)) value.forEach((v) => defaultNode(v, items, false));
    return;
  }
  if (!isObject(value)) return;
  const props = isObject(schema.properties) ? schema.properties : undefined;
  if (props) {
    for (const [key, sub] of Object.entries(props)) {
      if (!isObject(sub) || (root && key === 'metadata')) continue;
      if (!(key in value) && sub.default !== undefined) value[key] = clone(sub.default as Json);
      if (key in value) defaultNode(value[key] as Json, sub, false);
    }
  }
  const additional = schema.additionalProperties;
  if (isObject(additional)) for (const v of Object.values(value)) defaultNode(v, additional, false);
}

/** Turns Kubernetes extensions into plain JSON Schema that ajv understands. */
function toAjvSchema(s: Json): Json {
  if (Array.isArray(s)) return s.map(toAjvSchema);
  if (!isObject(s)) return s;
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(s)) {
    if (k.startsWith('x-kubernetes-') || k === 'default' || k === 'format' || k === 'example') continue;
    if (k === 'properties' && isObject(v)) {
      const props: JsonObject = {};
      for (const [pk, pv] of Object.entries(v)) props[pk] = toAjvSchema(pv);
      out.properties = props;
    } else if (k === 'additionalProperties' || k === 'items' || k === 'not') {
      out[k] = toAjvSchema(v);
    } else if (k === 'allOf' || k === 'anyOf' || k === 'oneOf') {
      out[k] = Array.isArray(v) ? v.map(toAjvSchema) : v;
    } else out[k] = v;
  }
  if (s['x-kubernetes-int-or-string'] === true) {
    delete out.type;
    // int-or-string's anyOf is only a description in structural schemas; the type check is the extension itself.
    delete out.anyOf;
    out.type = ['integer', 'string'];
  }
  if (out.nullable === true) {
    if (out.type === undefined) delete out.nullable;
    else if (Array.isArray(out.enum) && !out.enum.includes(null)) out.enum = [...out.enum, null];
  }
  return out;
}

function toCause(e: ErrorObject, root: JsonObject): StatusCause {
  const params = e.params as Record<string, unknown>;
  const { field, value } = locate(root, e.instancePath);
  const at = (sub: string): string => (field ? `${field}.${sub}` : sub);
  switch (e.keyword) {
    case 'required': {
      const missing = String(params.missingProperty);
      return { reason: 'FieldValueRequired', message: 'Required value', field: at(missing) };
    }
    case 'type': {
      const actual = jsonType(value);
      const want = Array.isArray(params.type) ? params.type.join(',') : String(params.type);
      return invalidCause(field, `"${actual}"`, `${field} in body must be of type ${want}: "${actual}"`);
    }
    case 'enum': {
      const allowed = Array.isArray(params.allowedValues) ? params.allowedValues : [];
      return {
        reason: 'FieldValueNotSupported',
        message: `Unsupported value: ${goValue(value)}: supported values: ${allowed.map((a) => goValue(a as Json)).join(', ')}`,
        field,
      };
    }
    case 'pattern':
      return invalidCause(field, goValue(value), `${field} in body should match '${String(params.pattern)}'`);
    case 'minimum':
    case 'exclusiveMinimum':
      return invalidCause(field, goValue(value), `${field} in body should be greater than ${e.keyword === 'minimum' ? 'or equal to ' : ''}${String(params.limit)}`);
    case 'maximum':
    case 'exclusiveMaximum':
      return invalidCause(field, goValue(value), `${field} in body should be less than ${e.keyword === 'maximum' ? 'or equal to ' : ''}${String(params.limit)}`);
    case 'minLength':
      return invalidCause(field, goValue(value), `${field} in body should be at least ${String(params.limit)} chars long`);
    case 'maxLength':
      return { reason: 'FieldValueTooLong', message: `Too long: may not be more than ${String(params.limit)} bytes`, field };
    case 'minItems':
      return invalidCause(field, String(Array.isArray(value) ? value.length : 0), `${field} in body should have at least ${String(params.limit)} items`);
    case 'maxItems':
      return { reason: 'FieldValueTooMany', message: `Too many: ${Array.isArray(value) ? value.length : 0}: must have at most ${String(params.limit)} items`, field };
    default:
      return invalidCause(field, goValue(value), `${field} in body ${e.message ?? 'is invalid'}`);
  }
}

function invalidCause(field: string, shownValue: string, detail: string): StatusCause {
  return { reason: 'FieldValueInvalid', message: `Invalid value: ${shownValue}: ${detail}`, field };
}

/** Maps an ajv instance path to the dotted field path the real server prints (`spec.list[0].x`). */
function locate(root: Json, pointer: string): { field: string; value: Json | undefined } {
  let cur: Json | undefined = root;
  let field = '';
  for (const raw of pointer.split('/').slice(1)) {
    const seg = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (Array.isArray(cur)) {
      field += `[${seg}]`;
      cur = cur[Number(seg)];
    } else {
      field += field ? `.${seg}` : seg;
      cur = isObject(cur) ? cur[seg] : undefined;
    }
  }
  return { field, value: cur };
}

function jsonType(v: Json | undefined): string {
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function goValue(v: Json | undefined): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (v === undefined) return 'null';
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  return `"${jsonType(v)}"`;
}
