// Metadata rules shared by every write: ObjectMeta normalisation, names, timestamps, kind-specific defaults.

import { randomUUID } from 'node:crypto';
import type { StatusCause } from './errors.js';
import { deepEqual, isObject, type Json, type JsonObject } from './json.js';
import type { ResourceType } from './resources.js';

const OBJECT_META_FIELDS = new Set([
  'name', 'generateName', 'namespace', 'selfLink', 'uid', 'resourceVersion', 'generation', 'creationTimestamp',
  'deletionTimestamp', 'deletionGracePeriodSeconds', 'labels', 'annotations', 'ownerReferences', 'finalizers',
  'managedFields',
]);

export function isObjectMetaField(key: string): boolean {
  return OBJECT_META_FIELDS.has(key);
}

/** Drops fields ObjectMeta does not have, as decoding into the Go struct would. */
export function normalizeMeta(m: JsonObject): JsonObject {
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(m)) if (OBJECT_META_FIELDS.has(k) && v !== null) out[k] = v;
  return out;
}

/** RFC 3339 with seconds, as metav1.Time serialises. */
export function timestamp(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

export function newUid(): string {
  return randomUUID();
}

const GENERATE_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

/** generateName + 5 random characters from the alphabet apimachinery uses. */
export function generatedName(prefix: string): string {
  let suffix = '';
  for (let i = 0; i < 5; i++) suffix += GENERATE_ALPHABET[Math.floor(Math.random() * GENERATE_ALPHABET.length)];
  return `${prefix.slice(0, 58)}${suffix}`;
}

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/** Name checks of the real validation: DNS-1123 label for namespaces, subdomain for the rest. */
export function validateName(t: ResourceType, name: string): StatusCause[] {
  if (t.kind === 'Namespace' && t.group === '') {
    if (name.length > 63 || !DNS1123_LABEL.test(name)) {
      return [{
        reason: 'FieldValueInvalid',
        field: 'metadata.name',
        message: `Invalid value: ${JSON.stringify(name)}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')`,
      }];
    }
    return [];
  }
  // RBAC names are path segments only; the real server allows almost anything there.
  if (t.group === 'rbac.authorization.k8s.io') return name.includes('/') || name.includes('%') ? [{ reason: 'FieldValueInvalid', field: 'metadata.name', message: `Invalid value: ${JSON.stringify(name)}: may not contain '/' or '%'` }] : [];
  if (name.length > 253 || !DNS1123_SUBDOMAIN.test(name)) {
    return [{
      reason: 'FieldValueInvalid',
      field: 'metadata.name',
      message: `Invalid value: ${JSON.stringify(name)}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')`,
    }];
  }
  return [];
}

const TAINT_EFFECTS = ['NoSchedule', 'PreferNoSchedule', 'NoExecute'];
const QUALIFIED_NAME_PART = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

/**
 * `spec.taints` as the API server's node validation checks it (validateNodeTaints): the key is a qualified name, the
 * value a label value, the effect one of the three, and no two taints share key and effect. The Duplicate message
 * renders the taint as JSON where Go prints its struct.
 */
export function validateNodeTaints(node: JsonObject): StatusCause[] {
  const spec = isObject(node.spec) ? node.spec : {};
  if (!Array.isArray(spec.taints)) return [];
  const causes: StatusCause[] = [];
  const seen = new Set<string>();
  spec.taints.forEach((taint, i) => {
    const field = `spec.taints[${i}]`;
    const t = isObject(taint) ? taint : {};
    const key = typeof t.key === 'string' ? t.key : '';
    const value = typeof t.value === 'string' ? t.value : '';
    const effect = typeof t.effect === 'string' ? t.effect : '';
    causes.push(...qualifiedNameCauses(key, `${field}.key`));
    if (value.length > 63 || !LABEL_VALUE.test(value)) {
      causes.push({
        reason: 'FieldValueInvalid',
        field: `${field}.value`,
        message: `Invalid value: ${JSON.stringify(value)}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')`,
      });
    }
    if (effect === '') {
      causes.push({ reason: 'FieldValueRequired', field: `${field}.effect`, message: 'Required value' });
    } else if (!TAINT_EFFECTS.includes(effect)) {
      causes.push({
        reason: 'FieldValueNotSupported',
        field: `${field}.effect`,
        message: `Unsupported value: ${JSON.stringify(effect)}: supported values: ${TAINT_EFFECTS.map((e) => JSON.stringify(e)).join(', ')}`,
      });
    }
    const id = `${effect}\u0000${key}`;
    if (seen.has(id)) {
      causes.push({
        reason: 'FieldValueDuplicate',
        field,
        message: `Duplicate value: ${JSON.stringify(taint)}: taints must be unique by key and effect pair`,
      });
    }
    seen.add(id);
  });
  return causes;
}

const MAX_ANNOTATIONS_BYTES = 256 * 1024;

/**
 * metadata.labels and metadata.annotations as ValidateObjectMeta checks them: label keys and annotation keys are
 * qualified names, label values at most 63 characters of the label-value alphabet, annotations 256 KiB in all.
 */
export function validateLabelsAndAnnotations(obj: JsonObject): StatusCause[] {
  const m = isObject(obj.metadata) ? obj.metadata : {};
  const causes: StatusCause[] = [];
  const labels = isObject(m.labels) ? m.labels : {};
  for (const [key, value] of Object.entries(labels)) {
    causes.push(...qualifiedNameCauses(key, 'metadata.labels'));
    const v = typeof value === 'string' ? value : '';
    const invalidValue = (message: string): StatusCause => ({ reason: 'FieldValueInvalid', field: 'metadata.labels', message: `Invalid value: ${JSON.stringify(v)}: ${message}` });
    if (v.length > 63) causes.push(invalidValue('must be no more than 63 characters'));
    if (!LABEL_VALUE.test(v)) {
      causes.push(invalidValue("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"));
    }
  }
  const annotations = isObject(m.annotations) ? m.annotations : {};
  let bytes = 0;
  for (const [key, value] of Object.entries(annotations)) {
    causes.push(...qualifiedNameCauses(key.toLowerCase(), 'metadata.annotations').map((c) => ({ ...c, message: c.message.replace(JSON.stringify(key.toLowerCase()), JSON.stringify(key)) })));
    bytes += Buffer.byteLength(key) + Buffer.byteLength(typeof value === 'string' ? value : '');
  }
  if (bytes > MAX_ANNOTATIONS_BYTES) {
    causes.push({ reason: 'FieldValueTooLong', field: 'metadata.annotations', message: `Too long: may not be more than ${MAX_ANNOTATIONS_BYTES} bytes` });
  }
  return causes;
}

function qualifiedNameCauses(key: string, field: string): StatusCause[] {
  const slash = key.indexOf('/');
  const prefix = slash < 0 ? undefined : key.slice(0, slash);
  const name = slash < 0 ? key : key.slice(slash + 1);
  const bad = (message: string): StatusCause[] => [{ reason: 'FieldValueInvalid', field, message: `Invalid value: ${JSON.stringify(key)}: ${message}` }];
  if (key === '') return [{ reason: 'FieldValueInvalid', field, message: `Invalid value: "": name part must be non-empty` }];
  if (prefix !== undefined && (prefix === '' || prefix.length > 253 || !DNS1123_SUBDOMAIN.test(prefix) || name.includes('/'))) {
    return bad("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')");
  }
  if (name.length > 63) return bad('name part must be no more than 63 characters');
  if (!QUALIFIED_NAME_PART.test(name)) {
    return bad("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')");
  }
  return [];
}

const POD_UPDATE_FORBIDDEN =
  'Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,' +
  '`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),' +
  '`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)';

/**
 * A pod's spec is immutable but for what ValidatePodUpdate lets through: container and init-container images,
 * activeDeadlineSeconds (set, or lowered), tolerations (additions only), a negative terminationGracePeriodSeconds
 * raised to 1. spec.nodeName is set once, through the binding subresource. (The real message appends a Go diff.)
 */
export function validatePodSpecUpdate(old: JsonObject, next: JsonObject): StatusCause[] {
  const oldSpec = isObject(old.spec) ? old.spec : {};
  const newSpec = isObject(next.spec) ? next.spec : {};
  const munged: JsonObject = { ...newSpec };
  for (const list of ['containers', 'initContainers']) {
    const before = oldSpec[list];
    const after = newSpec[list];
    if (!Array.isArray(before) || !Array.isArray(after) || before.length !== after.length) continue;
    munged[list] = after.map((c, i) => {
      const prev = before[i];
      if (!isObject(c) || !isObject(prev)) return c;
      const copy: JsonObject = { ...c };
      if (prev.image === undefined) delete copy.image;
      else copy.image = prev.image;
      return copy;
    });
  }
  const oldDeadline = oldSpec.activeDeadlineSeconds;
  const newDeadline = newSpec.activeDeadlineSeconds;
  if (typeof newDeadline === 'number' && newDeadline > 0 && (oldDeadline === undefined || (typeof oldDeadline === 'number' && newDeadline <= oldDeadline))) {
    if (oldDeadline === undefined) delete munged.activeDeadlineSeconds;
    else munged.activeDeadlineSeconds = oldDeadline;
  }
  const oldTolerations = Array.isArray(oldSpec.tolerations) ? oldSpec.tolerations : [];
  const newTolerations = Array.isArray(newSpec.tolerations) ? newSpec.tolerations : [];
  if (oldTolerations.every((o) => newTolerations.some((n) => deepEqual(o, n)))) {
    if (oldSpec.tolerations === undefined) delete munged.tolerations;
    else munged.tolerations = oldSpec.tolerations;
  }
  const oldGrace = oldSpec.terminationGracePeriodSeconds;
  if (typeof oldGrace === 'number' && oldGrace < 0 && newSpec.terminationGracePeriodSeconds === 1) munged.terminationGracePeriodSeconds = oldGrace;
  return deepEqual(oldSpec, munged) ? [] : [{ reason: 'FieldValueForbidden', field: 'spec', message: POD_UPDATE_FORBIDDEN }];
}

/** A Secret's `stringData` is write-only: the server folds it into base64 `data` (stringData wins) and drops it. */
export function foldSecretStringData(t: ResourceType, obj: JsonObject): void {
  if (t.group !== '' || t.kind !== 'Secret' || !isObject(obj.stringData)) return;
  const data: JsonObject = isObject(obj.data) ? { ...obj.data } : {};
  for (const [key, value] of Object.entries(obj.stringData)) {
    if (typeof value === 'string') data[key] = Buffer.from(value, 'utf8').toString('base64');
  }
  obj.data = data;
  delete obj.stringData;
}

/** Status a built-in kind gets on create, as its registry strategy's PrepareForCreate sets it. */
/**
 * The ServiceAccount admission plugin on pod create: a pod without a service account runs as `default` (mirror pods
 * excepted); the v1 encoding then shows the name in the deprecated `spec.serviceAccount` too.
 */
export function defaultPodServiceAccount(pod: JsonObject): void {
  const annotations = isObject(pod.metadata) && isObject(pod.metadata.annotations) ? pod.metadata.annotations : {};
  if (annotations['kubernetes.io/config.mirror'] !== undefined || !isObject(pod.spec)) return;
  const spec = pod.spec;
  const named = (v: Json | undefined): string => (typeof v === 'string' ? v : '');
  const name = named(spec.serviceAccountName) || named(spec.serviceAccount) || 'default';
  spec.serviceAccountName = name;
  spec.serviceAccount = name;
}

export function statusOnCreate(t: ResourceType, obj: JsonObject): Json | undefined {
  if (t.group === '' && t.kind === 'Pod') return { phase: 'Pending', qosClass: podQosClass(obj) };
  if (t.group === '' && t.kind === 'Namespace') return { phase: 'Active' };
  if (t.schema && t.statusSubresource) return undefined;
  if (t.group === '' && t.kind === 'Service') return { loadBalancer: {} };
  if (t.group === 'apps' || t.group === 'policy') return {};
  return obj.status;
}

function podQosClass(pod: JsonObject): string {
  const spec = isObject(pod.spec) ? pod.spec : {};
  const containers = [
    ...(Array.isArray(spec.containers) ? spec.containers : []),
    ...(Array.isArray(spec.initContainers) ? spec.initContainers : []),
  ].filter(isObject);
  let any = false;
  let guaranteed = containers.length > 0;
  for (const c of containers) {
    const res = isObject(c.resources) ? c.resources : {};
    const req = isObject(res.requests) ? res.requests : {};
    const lim = isObject(res.limits) ? res.limits : {};
    if (Object.keys(req).length || Object.keys(lim).length) any = true;
    for (const r of ['cpu', 'memory']) {
      const l = lim[r];
      const q = req[r] ?? l;
      if (l === undefined || q !== l) guaranteed = false;
    }
  }
  if (!any) return 'BestEffort';
  return guaranteed ? 'Guaranteed' : 'Burstable';
}
