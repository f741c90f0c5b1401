// Turns raw aadpodidentity.k8s.io objects (as served, or as stored by old versions) into our view types.
//
// Legacy casing: before v1.6 the original decoded JSON case-insensitively, so tutorials and objects used
// `ResourceID`, `ClientID`, `ClientId`, `AzureIdentity`, `Selector`, `PodLabels`, `Type`, and old MIC versions
// wrote AzureAssignedIdentities with keys such as `podnamespace`, `azureidentityref` or a top-level `Status`.
// We fold every key that matches a field case-insensitively (Go's encoding/json rule) into the camelCase field.
// The camelCase key wins whenever it holds a value; legacy keys used are reported so callers can warn.
// Nothing here throws: garbage becomes a problem string and an empty value.
import { isNamespacedBehavior, POD_UID_LABEL } from './names.js';
import {
  asArray,
  asRecord,
  timestampText,
  type AssignedIdentityState,
  type AzureAssignedIdentity,
  type AzureIdentity,
  type AzureIdentityBinding,
  type AzurePodIdentityException,
  type IdentityMode,
  type IdentityType,
  type Normalized,
  type ObjectView,
  type SecretRef,
  type UnknownRecord,
} from './types.js';

export function normalizeAzureIdentity(raw: unknown): Normalized<AzureIdentity> {
  const r = new Reader();
  const value = readAzureIdentity(raw, r, '');
  return r.result(value);
}

export function normalizeBinding(raw: unknown): Normalized<AzureIdentityBinding> {
  const r = new Reader();
  const value = readBinding(raw, r, '');
  return r.result(value);
}

export function normalizeException(raw: unknown): Normalized<AzurePodIdentityException> {
  const r = new Reader();
  const obj = r.object(raw, 'object');
  const meta = readMeta(obj, r, '');
  const spec = r.pick(obj, 'spec', '');
  const podLabels = r.stringMap(r.object(spec.value, spec.path), 'podLabels', spec.path);
  return r.result(meta === null ? null : { namespace: meta.namespace, name: meta.name, uid: meta.uid, resourceVersion: meta.resourceVersion, labels: meta.labels, annotations: meta.annotations, creationTimestamp: meta.creationTimestamp, finalizers: meta.finalizers, deleting: meta.deleting, podLabels });
}

export function normalizeAssignedIdentity(raw: unknown): Normalized<AzureAssignedIdentity> {
  const r = new Reader();
  const obj = r.object(raw, 'object');
  const meta = readMeta(obj, r, '');
  const specAt = r.pick(obj, 'spec', '');
  const spec = r.object(specAt.value, specAt.path);
  const statusAt = r.pick(obj, 'status', '');
  const status = r.object(statusAt.value, statusAt.path);
  const identityAt = r.pick(spec, 'azureIdentityRef', specAt.path);
  const bindingAt = r.pick(spec, 'azureBindingRef', specAt.path);
  const identityRef = identityAt.value === undefined ? null : readAzureIdentity(identityAt.value, r, identityAt.path);
  const bindingRef = bindingAt.value === undefined ? null : readBinding(bindingAt.value, r, bindingAt.path);
  if (identityRef === null) r.problem('spec.azureIdentityRef is missing or has no metadata.name');
  if (bindingRef === null) r.problem('spec.azureBindingRef is missing or has no metadata.name');
  const value: AzureAssignedIdentity | null =
    meta === null
      ? null
      : {
          // Spelled out, not spread: `{ ...meta, more }` gave every object a map of its own (slow, and 2 kB each).
          namespace: meta.namespace,
          name: meta.name,
          uid: meta.uid,
          resourceVersion: meta.resourceVersion,
          labels: meta.labels,
          annotations: meta.annotations,
          creationTimestamp: meta.creationTimestamp,
          finalizers: meta.finalizers,
          deleting: meta.deleting,
          identityRef,
          bindingRef,
          pod: r.string(spec, 'pod', specAt.path),
          podNamespace: r.string(spec, 'podNamespace', specAt.path),
          nodeName: r.string(spec, 'nodename', specAt.path),
          state: readState(statusAt.value, status, r, statusAt.path),
          podUid: meta.labels[POD_UID_LABEL] ?? '',
        };
  return r.result(value);
}

/* ------------------------------------------------------------------------------------------ per kind */

function readAzureIdentity(raw: unknown, r: Reader, at: string): AzureIdentity | null {
  const obj = r.object(raw, at === '' ? 'object' : at);
  const meta = readMeta(obj, r, at);
  const { value: specRaw, path: specPath } = r.pick(obj, 'spec', at);
  const spec = r.object(specRaw, specPath);
  const typeAt = r.pick(spec, 'type', specPath);
  const { type, invalidType } = readIdentityType(typeAt.value, r, typeAt.path);
  const modeAt = r.pick(spec, 'mode', specPath);
  const { mode, invalidMode } = readIdentityMode(modeAt.value, r, modeAt.path);
  const value: AzureIdentity | null =
    meta === null
      ? null
      : {
          // Spelled out, not spread: `{ ...meta, more }` gave every object a map of its own (slow, and 2 kB each).
          namespace: meta.namespace,
          name: meta.name,
          uid: meta.uid,
          resourceVersion: meta.resourceVersion,
          labels: meta.labels,
          annotations: meta.annotations,
          creationTimestamp: meta.creationTimestamp,
          finalizers: meta.finalizers,
          deleting: meta.deleting,
          type,
          invalidType,
          resourceID: r.string(spec, 'resourceID', specPath),
          clientID: r.string(spec, 'clientID', specPath),
          clientPassword: readSecretRef(spec, r, specPath),
          tenantID: r.string(spec, 'tenantID', specPath),
          auxiliaryTenantIDs: r.stringList(spec, 'auxiliaryTenantIDs', specPath),
          adEndpoint: r.string(spec, 'adEndpoint', specPath),
          adResourceID: r.string(spec, 'adResourceID', specPath),
          namespaced: isNamespacedBehavior(meta.annotations),
          mode,
          invalidMode,
        };
  return value;
}

function readBinding(raw: unknown, r: Reader, at: string): AzureIdentityBinding | null {
  const obj = r.object(raw, at === '' ? 'object' : at);
  const meta = readMeta(obj, r, at);
  const { value: specRaw, path: specPath } = r.pick(obj, 'spec', at);
  const spec = r.object(specRaw, specPath);
  const azureIdentity = r.string(spec, 'azureIdentity', specPath);
  const selector = r.string(spec, 'selector', specPath);
  const weight = r.integer(spec, 'weight', specPath);
  return meta === null ? null : { namespace: meta.namespace, name: meta.name, uid: meta.uid, resourceVersion: meta.resourceVersion, labels: meta.labels, annotations: meta.annotations, creationTimestamp: meta.creationTimestamp, finalizers: meta.finalizers, deleting: meta.deleting, azureIdentity, selector, weight };
}

/** Missing type means 0 (Go's zero value, as the original). Numeric strings from pre-schema YAML are read. */
function readIdentityType(
  raw: unknown,
  r: Reader,
  path: string,
): { type: IdentityType | null; invalidType: string } {
  if (raw === undefined) return { type: 0, invalidType: '' };
  let n: unknown = raw;
  if (typeof raw === 'string' && /^\s*\d+\s*$/.test(raw)) {
    n = Number(raw.trim());
    r.problem(`${path} is the string ${JSON.stringify(raw)}; read as the integer ${String(n)}`);
  }
  if (n === 0 || n === 1 || n === 2) return { type: n, invalidType: '' };
  return { type: null, invalidType: describe(raw) };
}

const MODES: readonly IdentityMode[] = ['Attached', 'Federated'];

/**
 * Missing or empty mode means Attached (every identity the original knew). The schema's enum makes the API server
 * refuse other spellings; one that differs only in case (stored before the enum) is read, with a problem, as
 * numeric strings are for type. Anything else is null: the identity is unusable until it is fixed (fail closed).
 */
function readIdentityMode(raw: unknown, r: Reader, path: string): { mode: IdentityMode | null; invalidMode: string } {
  if (raw === undefined) return { mode: 'Attached', invalidMode: '' };
  if (raw === 'Attached' || raw === 'Federated') return { mode: raw, invalidMode: '' };
  const folded = typeof raw === 'string' ? MODES.find((m) => m.toLowerCase() === raw.trim().toLowerCase()) : undefined;
  if (folded !== undefined) {
    r.problem(`${path} ${JSON.stringify(raw)} read as ${folded}`);
    return { mode: folded, invalidMode: '' };
  }
  return { mode: null, invalidMode: describe(raw) };
}

function readSecretRef(spec: UnknownRecord, r: Reader, specPath: string): SecretRef | null {
  const { value: raw, path } = r.pick(spec, 'clientPassword', specPath);
  if (raw === undefined) return null;
  const obj = r.object(raw, path);
  const name = r.string(obj, 'name', path);
  const namespace = r.string(obj, 'namespace', path);
  return name === '' && namespace === '' ? null : { name, namespace };
}

/**
 * `''` (no status.status) is what MIC < 1.5 left, and counts as assigned, as in the original. But the Go MIC always
 * serialised a status object, so an object with no status at all is one of ours just created through the main
 * resource (the status subresource drops status on create): it reads as Created, failing closed.
 */
function readState(statusRaw: unknown, status: UnknownRecord, r: Reader, statusPath: string): AssignedIdentityState {
  if (statusRaw === undefined) return 'Created';
  const { value: raw, path } = r.pick(status, 'status', statusPath);
  if (raw === undefined) return '';
  if (raw === 'Created' || raw === 'Assigned' || raw === 'Unassigned' || raw === '') return raw;
  // Fail closed: an unknown state must not read as '' (which counts as assigned).
  r.problem(`${path} ${describe(raw)} is not Created, Assigned or Unassigned; treated as Created`);
  return 'Created';
}

function readMeta(obj: UnknownRecord, r: Reader, at: string): ObjectView | null {
  const path = join(at, 'metadata');
  const meta = r.object(obj.metadata, path);
  const name = typeof meta.name === 'string' ? meta.name : '';
  if (name === '') {
    r.problem(`${path}.name is missing`);
    return null;
  }
  return {
    namespace: r.exactString(meta, 'namespace', path),
    name,
    uid: r.exactString(meta, 'uid', path),
    resourceVersion: r.exactString(meta, 'resourceVersion', path),
    labels: r.exactStringMap(meta, 'labels', path),
    annotations: r.exactStringMap(meta, 'annotations', path),
    creationTimestamp: timestampText(meta.creationTimestamp),
    finalizers: asArray(meta.finalizers).filter((f): f is string => typeof f === 'string'),
    deleting: meta.deletionTimestamp !== undefined && meta.deletionTimestamp !== null && meta.deletionTimestamp !== '',
  };
}

/* ------------------------------------------------------------------------------------------- reader */

/** Reads fields with the legacy-casing rule, collecting legacy keys used and problems. */
class Reader {
  private readonly legacy: string[] = [];
  private readonly problems: string[] = [];

  result<T>(value: T | null): Normalized<T> {
    return { value, legacyFields: this.legacy.length > 0 ? [...this.legacy] : NO_KEYS, problems: this.problems.length > 0 ? [...this.problems] : NO_KEYS };
  }

  problem(text: string): void {
    this.problems.push(text);
  }

  /**
   * The value for `key` in `obj`: the exact key if it holds a value, else a key equal to it ignoring case
   * (the first in sorted order, so the choice is stable). Empty strings and null count as "no value".
   * `path` is where the value was found, with the key actually used (e.g. `spec.ClientPassword`).
   */
  pick(obj: UnknownRecord, key: string, parent: string): { value: unknown; path: string } {
    const value = this.find(obj, key, parent);
    return { value, path: join(parent, this.found) };
  }

  /** The key `find` last used (for a path, built only when a message or a nested read needs one). */
  private found = '';

  /**
   * `pick` without the path: runs for every field of every object a watch delivers, so it allocates nothing unless
   * another spelling of the key is present; the key it used is left in `found`.
   */
  private find(obj: UnknownRecord, key: string, parent: string): unknown {
    const exact = Object.hasOwn(obj, key) ? obj[key] : undefined;
    let variants: string[] = NO_KEYS;
    for (const k in obj) {
      if (k === key || k.length !== key.length || !Object.hasOwn(obj, k)) continue;
      if (!equalIgnoringCase(k, key) || !hasValue(obj[k])) continue;
      if (variants === NO_KEYS) variants = [];
      variants.push(k);
    }
    if (variants.length > 1) variants.sort();
    if (hasValue(exact)) {
      for (const k of variants) {
        if (!sameValue(obj[k], exact)) this.problem(`${join(parent, k)} ignored: ${join(parent, key)} is set`);
      }
      this.found = key;
      return exact;
    }
    const first = variants[0];
    if (first === undefined) {
      this.found = key;
      return exact === null || exact === '' ? undefined : exact;
    }
    this.legacy.push(join(parent, first));
    this.found = first;
    return obj[first];
  }

  /** The value as a record; reports anything else that is present. */
  object(raw: unknown, label: string): UnknownRecord {
    if (raw !== undefined && raw !== null && (typeof raw !== 'object' || Array.isArray(raw))) {
      this.problem(`${label} must be an object, got ${describe(raw)}`);
    }
    return asRecord(raw);
  }

  string(obj: UnknownRecord, key: string, parent: string): string {
    const value = this.find(obj, key, parent);
    return this.asString(value, parent, this.found);
  }

  /** For metadata: Kubernetes itself is case-sensitive there, so no folding. */
  exactString(obj: UnknownRecord, key: string, parent: string): string {
    return this.asString(obj[key], parent, key);
  }

  integer(obj: UnknownRecord, key: string, parent: string): number | null {
    const { value: raw, path } = this.pick(obj, key, parent);
    if (raw === undefined) return null;
    if (typeof raw === 'number' && Number.isInteger(raw)) return raw;
    this.problem(`${path} must be an integer, got ${describe(raw)}`);
    return null;
  }

  stringList(obj: UnknownRecord, key: string, parent: string): readonly string[] {
    const { value: raw, path } = this.pick(obj, key, parent);
    if (raw === undefined) return [];
    if (!Array.isArray(raw)) {
      this.problem(`${path} must be a list of strings, got ${describe(raw)}`);
      return [];
    }
    const out: string[] = [];
    raw.forEach((item, i) => {
      if (typeof item === 'string') out.push(item);
      else this.problem(`${path}[${i}] must be a string, got ${describe(item)}`);
    });
    return out;
  }

  stringMap(obj: UnknownRecord, key: string, parent: string): Readonly<Record<string, string>> {
    const value = this.find(obj, key, parent);
    return this.toStringMap(value, parent, this.found);
  }

  exactStringMap(obj: UnknownRecord, key: string, parent: string): Readonly<Record<string, string>> {
    return this.toStringMap(obj[key], parent, key);
  }

  /** The path (`parent.key`) is built only for a problem, as in asString. */
  private toStringMap(raw: unknown, parent: string, key: string): Readonly<Record<string, string>> {
    const out: Record<string, string> = {};
    if (raw === undefined || raw === null) return out;
    if (typeof raw !== 'object' || Array.isArray(raw)) {
      this.problem(`${join(parent, key)} must be a map of strings, got ${describe(raw)}`);
      return out;
    }
    const record = raw as UnknownRecord;
    for (const k in record) {
      if (!Object.hasOwn(record, k)) continue;
      const v = record[k];
      if (typeof v === 'string') out[k] = v;
      else this.problem(`${join(parent, key)}.${k} must be a string, got ${describe(v)}`);
    }
    return out;
  }

  private asString(raw: unknown, parent: string, key: string): string {
    if (raw === undefined || raw === null) return '';
    if (typeof raw === 'string') return raw;
    this.problem(`${join(parent, key)} must be a string, got ${describe(raw)}`);
    return '';
  }
}

/* ------------------------------------------------------------------------------------------- helpers */

/** The shared empty list (never written to: variants are copied out before a push). */
const NO_KEYS = Object.freeze([]) as unknown as string[];

function hasValue(v: unknown): boolean {
  return v !== undefined && v !== null && v !== '';
}

function sameValue(a: unknown, b: unknown): boolean {
  return a === b || JSON.stringify(a) === JSON.stringify(b);
}

/** `a.toLowerCase() === b.toLowerCase()`, without allocating when both are ASCII (every key in practice). */
export function equalIgnoringCase(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    if (x > 0x7f || y > 0x7f) return a.toLowerCase() === b.toLowerCase();
    if (x >= 0x41 && x <= 0x5a) x += 0x20;
    if (y >= 0x41 && y <= 0x5a) y += 0x20;
    if (x !== y) return /[^\x00-\x7f]/.test(a) || /[^\x00-\x7f]/.test(b) ? a.toLowerCase() === b.toLowerCase() : false;
  }
  return true;
}

function join(parent: string, key: string): string {
  return parent === '' ? key : `${parent}.${key}`;
}

/** Short, safe rendering of a bad value for messages (never the whole object). */
function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v);
  return `${typeof v} ${String(v)}`;
}
