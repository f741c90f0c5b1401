// `meta.k8s.io/v1` Table rendering for `kubectl get`: CRD printer columns and a few built-in layouts.

import { isObject, type Json, type JsonObject } from './json.js';

export interface PrinterColumn {
  readonly name: string;
  readonly type: string;
  readonly format?: string;
  readonly description?: string;
  readonly priority: number;
  readonly jsonPath: string;
}

interface ColumnDefinition {
  name: string;
  type: string;
  format: string;
  description: string;
  priority: number;
}

type Cell = string | number | boolean | null;

interface TableLayout {
  columns: ColumnDefinition[];
  cells(obj: JsonObject, now: number): Cell[];
}

export type IncludeObject = 'None' | 'Metadata' | 'Object';

export function renderTable(
  kind: string,
  printerColumns: readonly PrinterColumn[] | undefined,
  items: readonly JsonObject[],
  listMeta: JsonObject,
  include: IncludeObject,
  now: number,
): JsonObject {
  const layout = printerColumns ? customLayout(printerColumns) : builtinLayout(kind);
  const rows = items.map((obj) => {
    const row: JsonObject = { cells: layout.cells(obj, now) };
    if (include === 'Object') row.object = obj;
    else if (include === 'Metadata') {
      row.object = { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: isObject(obj.metadata) ? obj.metadata : {} };
    }
    return row;
  });
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: listMeta,
    columnDefinitions: layout.columns as unknown as Json,
    rows,
  };
}

const NAME_COLUMN: ColumnDefinition = {
  name: 'Name',
  type: 'string',
  format: 'name',
  description: 'Name must be unique within a namespace.',
  priority: 0,
};
const AGE_COLUMN: ColumnDefinition = {
  name: 'Age',
  type: 'string',
  format: '',
  description: 'CreationTimestamp is a timestamp representing the server time when this object was created.',
  priority: 0,
};

/** CRD columns; with none declared the real server shows Age only. */
function customLayout(cols: readonly PrinterColumn[]): TableLayout {
  const effective: readonly PrinterColumn[] =
    cols.length > 0
      ? cols
      : [{ name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp', priority: 0 }];
  return {
    columns: [
      NAME_COLUMN,
      ...effective.map((c) => ({
        name: c.name,
        type: c.type,
        format: c.format ?? '',
        description: c.description ?? '',
        priority: c.priority,
      })),
    ],
    cells(obj, now) {
      return [nameOf(obj), ...effective.map((c) => columnCell(c, obj, now))];
    },
  };
}

function columnCell(c: PrinterColumn, obj: JsonObject, now: number): Cell {
  const v = evalJsonPath(obj, c.jsonPath);
  if (v === undefined || v === null) return null;
  if (c.type === 'date' && typeof v === 'string') return humanAge(v, now);
  if (typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean') return v;
  return JSON.stringify(v);
}

/** The JSONPath subset printer columns use: `.a.b`, `.a[0].b`, `.a['x.y']`. */
export function evalJsonPath(obj: Json, path: string): Json | undefined {
  const tokens = path.replace(/^\{|\}$/g, '').match(/\.?([A-Za-z0-9_$-]+)|\[(\d+)\]|\['([^']+)'\]/g) ?? [];
  let cur: Json | undefined = obj;
  for (const t of tokens) {
    if (cur === undefined || cur === null) return undefined;
    const idx = /^\[(\d+)\]$/.exec(t);
    const quoted = /^\['([^']+)'\]$/.exec(t);
    if (idx) cur = Array.isArray(cur) ? cur[Number(idx[1])] : undefined;
    else {
      const key = quoted ? (quoted[1] ?? '') : t.replace(/^\./, '');
      cur = isObject(cur) ? cur[key] : undefined;
    }
  }
  return cur;
}

function builtinLayout(kind: string): TableLayout {
  const col = (name: string, description = ''): ColumnDefinition => ({ name, type: 'string', format: '', description, priority: 0 });
  switch (kind) {
    case 'Pod':
      return {
        columns: [NAME_COLUMN, col('Ready'), col('Status'), { ...col('Restarts'), type: 'string' }, AGE_COLUMN],
        cells(obj, now) {
          const spec = isObject(obj.spec) ? obj.spec : {};
          const status = isObject(obj.status) ? obj.status : {};
          const containers = Array.isArray(spec.containers) ? spec.containers.length : 0;
          const statuses = Array.isArray(status.containerStatuses) ? status.containerStatuses.filter(isObject) : [];
          const ready = statuses.filter((s) => s.ready === true).length;
          const restarts = statuses.reduce((n, s) => n + (typeof s.restartCount === 'number' ? s.restartCount : 0), 0);
          const meta = isObject(obj.metadata) ? obj.metadata : {};
          const phase = meta.deletionTimestamp ? 'Terminating' : typeof status.phase === 'string' ? status.phase : 'Unknown';
          return [nameOf(obj), `${ready}/${containers}`, phase, String(restarts), ageOf(obj, now)];
        },
      };
    case 'Namespace':
      return {
        columns: [NAME_COLUMN, col('Status'), AGE_COLUMN],
        cells(obj, now) {
          const status = isObject(obj.status) ? obj.status : {};
          return [nameOf(obj), typeof status.phase === 'string' ? status.phase : 'Active', ageOf(obj, now)];
        },
      };
    case 'Node':
      return {
        columns: [NAME_COLUMN, col('Status'), AGE_COLUMN],
        cells(obj, now) {
          const status = isObject(obj.status) ? obj.status : {};
          const conds = Array.isArray(status.conditions) ? status.conditions.filter(isObject) : [];
          const ready = conds.find((c) => c.type === 'Ready');
          return [nameOf(obj), ready?.status === 'True' ? 'Ready' : 'NotReady', ageOf(obj, now)];
        },
      };
    default:
      return { columns: [NAME_COLUMN, AGE_COLUMN], cells: (obj, now) => [nameOf(obj), ageOf(obj, now)] };
  }
}

function nameOf(obj: JsonObject): string {
  return isObject(obj.metadata) && typeof obj.metadata.name === 'string' ? obj.metadata.name : '';
}

function ageOf(obj: JsonObject, now: number): string {
  const ts = isObject(obj.metadata) ? obj.metadata.creationTimestamp : undefined;
  return typeof ts === 'string' ? humanAge(ts, now) : '<unknown>';
}

function humanAge(timestamp: string, now: number): string {
  const t = Date.parse(timestamp);
  return Number.isNaN(t) ? '<invalid>' : humanDuration(now - t);
}

/** apimachinery's `duration.HumanDuration`, which kubectl shows in AGE columns. */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) {
    const s = seconds % 60;
    return s === 0 ? `${minutes}m` : `${minutes}m${s}s`;
  }
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(seconds / 3600);
  if (hours < 8) {
    const m = minutes % 60;
    return m === 0 ? `${hours}h` : `${hours}h${m}m`;
  }
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) {
    const h = hours % 24;
    return h === 0 ? `${Math.floor(hours / 24)}d` : `${Math.floor(hours / 24)}d${h}h`;
  }
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24)}d`;
  const years = Math.floor(hours / 24 / 365);
  if (years < 8) {
    const d = Math.floor(hours / 24) % 365;
    return d === 0 ? `${years}y` : `${years}y${d}d`;
  }
  return `${years}y`;
}
