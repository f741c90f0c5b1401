// Label and field selectors, parsed once per request and matched per object.

import { badRequest } from './errors.js';
import { isObject, stringMap, type JsonObject } from './json.js';

type LabelRequirement =
  | { op: 'eq' | 'neq'; key: string; value: string }
  | { op: 'in' | 'notin'; key: string; values: string[] }
  | { op: 'exists' | 'notexists'; key: string }
  | { op: 'gt' | 'lt'; key: string; value: number };

export interface Selector {
  matches(obj: JsonObject): boolean;
  readonly empty: boolean;
}

export const EVERYTHING: Selector = { matches: () => true, empty: true };

/** Parses `labelSelector` with the real grammar: `=`, `==`, `!=`, `in`, `notin`, `key`, `!key`, `>`, `<`. */
export function parseLabelSelector(text: string | null | undefined): Selector {
  if (!text || !text.trim()) return EVERYTHING;
  const reqs = splitTopLevel(text).map(parseLabelRequirement);
  return {
    empty: false,
    matches(obj) {
      const labels = stringMap(isObject(obj.metadata) ? obj.metadata.labels : undefined);
      return reqs.every((r) => labelMatches(r, labels));
    },
  };
}

/** Fields that can be selected on, per kind; everything else gets 400 as on the real server. */
const FIELDS_BY_KIND: Record<string, readonly string[]> = {
  Pod: [
    'spec.nodeName', 'spec.restartPolicy', 'spec.schedulerName', 'spec.serviceAccountName', 'spec.hostNetwork',
    'status.phase', 'status.podIP', 'status.podIPs', 'status.nominatedNodeName',
  ],
  Event: [
    'involvedObject.kind', 'involvedObject.namespace', 'involvedObject.name', 'involvedObject.uid',
    'involvedObject.apiVersion', 'involvedObject.resourceVersion', 'involvedObject.fieldPath', 'reason',
    'reportingComponent', 'source', 'type',
  ],
  Secret: ['type'],
  Namespace: ['status.phase'],
  Node: ['spec.unschedulable'],
};

export function parseFieldSelector(text: string | null | undefined, kind: string, custom: boolean): Selector {
  if (!text || !text.trim()) return EVERYTHING;
  const allowed = new Set(['metadata.name', 'metadata.namespace', ...(custom ? [] : (FIELDS_BY_KIND[kind] ?? []))]);
  const reqs = splitTopLevel(text).map((part) => {
    const m = /^\s*([^!=\s]+)\s*(==|!=|=)\s*(.*?)\s*$/.exec(part);
    if (!m) throw badRequest(`invalid selector: '${text}'; can't understand '${part}'`);
    const [, field, op, value] = m as unknown as [string, string, string, string];
    if (!allowed.has(field)) {
      throw badRequest(
        custom
          ? `"${field}" is not a known field selector: only "metadata.name", "metadata.namespace"`
          : `field label not supported: ${field}`,
      );
    }
    return { field, negate: op === '!=', value };
  });
  return {
    empty: false,
    matches(obj) {
      return reqs.every((r) => (fieldValue(obj, r.field) === r.value) !== r.negate);
    },
  };
}

/** Both selectors at once. */
export function both(a: Selector, b: Selector): Selector {
  if (a.empty) return b;
  if (b.empty) return a;
  return { empty: false, matches: (o) => a.matches(o) && b.matches(o) };
}

function fieldValue(obj: JsonObject, path: string): string {
  if (path === 'status.podIPs') {
    const ips = isObject(obj.status) && Array.isArray(obj.status.podIPs) ? obj.status.podIPs : [];
    const first = ips[0];
    return isObject(first) && typeof first.ip === 'string' ? first.ip : '';
  }
  if (path === 'source') {
    const src = obj.source;
    return isObject(src) && typeof src.component === 'string' ? src.component : '';
  }
  let cur: unknown = obj;
  for (const seg of path.split('.')) cur = isObject(cur) ? cur[seg] : undefined;
  if (cur === undefined || cur === null) return path === 'spec.hostNetwork' || path === 'spec.unschedulable' ? 'false' : '';
  return typeof cur === 'string' ? cur : JSON.stringify(cur);
}

function splitTopLevel(text: string): string[] {
  const parts: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of text) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  return parts.map((p) => p.trim()).filter((p) => p.length > 0);
}

const KEY = String.raw`[A-Za-z0-9](?:[-A-Za-z0-9_./]*[A-Za-z0-9])?`;
const SET_RE = new RegExp(String.raw`^(${KEY})\s+(in|notin)\s*\(([^)]*)\)$`);
const CMP_RE = new RegExp(String.raw`^(${KEY})\s*(==|=|!=|>|<)\s*(.*)$`);
const EXISTS_RE = new RegExp(String.raw`^(!?)\s*(${KEY})$`);

function parseLabelRequirement(part: string): LabelRequirement {
  const set = SET_RE.exec(part);
  if (set) {
    const values = (set[3] ?? '').split(',').map((v) => v.trim()).filter((v) => v !== '');
    return { op: set[2] === 'in' ? 'in' : 'notin', key: set[1] ?? '', values };
  }
  const cmp = CMP_RE.exec(part);
  if (cmp) {
    const [, key = '', op, raw = ''] = cmp;
    const value = raw.trim();
    if (op === '>' || op === '<') {
      const n = Number(value);
      if (!Number.isInteger(n)) throw badRequest(`unable to parse requirement: for 'gt', 'lt' operators, the value must be an integer`);
      return { op: op === '>' ? 'gt' : 'lt', key, value: n };
    }
    if (!/^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]*[A-Za-z0-9])?)?$/.test(value)) {
      throw badRequest(`unable to parse requirement: values[0][${key}]: Invalid value: "${value}": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character`);
    }
    return { op: op === '!=' ? 'neq' : 'eq', key, value };
  }
  const ex = EXISTS_RE.exec(part);
  if (ex) return { op: ex[1] === '!' ? 'notexists' : 'exists', key: ex[2] ?? '' };
  throw badRequest(`unable to parse requirement: found '${part}', expected: in, notin, =, ==, !=, gt, lt`);
}

function labelMatches(r: LabelRequirement, labels: Record<string, string>): boolean {
  const has = Object.prototype.hasOwnProperty.call(labels, r.key);
  const v = labels[r.key];
  switch (r.op) {
    case 'eq':
      return has && v === r.value;
    case 'neq':
      return !has || v !== r.value;
    case 'in':
      return has && r.values.includes(v ?? '');
    case 'notin':
      return !has || !r.values.includes(v ?? '');
    case 'exists':
      return has;
    case 'notexists':
      return !has;
    case 'gt':
      return has && Number(v) > r.value;
    case 'lt':
      return has && Number(v) < r.value;
  }
}
