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

/** The real server's layouts (kubernetes/pkg/printers/internalversion), priority-1 columns shown by `-o wide`. */
function builtinLayout(kind: string): TableLayout {
  switch (kind) {
    case 'Pod':
      return {
        columns: [
          NAME_COLUMN,
          col('Ready', 'The aggregate readiness state of this pod for accepting traffic.'),
          col('Status', 'The aggregate status of the containers in this pod.'),
          col('Restarts', 'The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.'),
          AGE_COLUMN,
          col('IP', 'podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.', 1),
          col('Node', 'NodeName indicates in which node this pod is scheduled.', 1),
          col('Nominated Node', 'nominatedNodeName is set only when this pod preempts other pods on the node.', 1),
          col('Readiness Gates', 'If specified, all readiness gates will be evaluated for pod readiness.', 1),
        ],
        cells: podCells,
      };
    case 'Namespace':
      return {
        columns: [NAME_COLUMN, col('Status', 'The status of the namespace'), AGE_COLUMN],
        cells(obj, now) {
          const status = objectAt(obj, 'status');
          return [nameOf(obj), typeof status.phase === 'string' ? status.phase : 'Active', ageOf(obj, now)];
        },
      };
    case 'Node':
      return {
        columns: [
          NAME_COLUMN,
          col('Status', 'The status of the node'),
          col('Roles', 'The roles of the node'),
          AGE_COLUMN,
          col('Version', 'Kubelet Version reported by the node.'),
          col('Internal-IP', 'List of addresses reachable to the node.', 1),
          col('External-IP', 'List of addresses reachable to the node.', 1),
          col('OS-Image', 'OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).', 1),
          col('Kernel-Version', "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).", 1),
          col('Container-Runtime', 'ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).', 1),
        ],
        cells: nodeCells,
      };
    case 'ServiceAccount':
      return {
        columns: [
          NAME_COLUMN,
          col('Secrets', 'Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.'),
          AGE_COLUMN,
        ],
        cells: (obj, now) => [nameOf(obj), Array.isArray(obj.secrets) ? obj.secrets.length : 0, ageOf(obj, now)],
      };
    default:
      return { columns: [NAME_COLUMN, AGE_COLUMN], cells: (obj, now) => [nameOf(obj), ageOf(obj, now)] };
  }
}

function col(name: string, description: string, priority = 0): ColumnDefinition {
  return { name, type: 'string', format: '', description, priority };
}

function podCells(obj: JsonObject, now: number): Cell[] {
  const spec = objectAt(obj, 'spec');
  const status = objectAt(obj, 'status');
  const meta = objectAt(obj, 'metadata');
  const containers = Array.isArray(spec.containers) ? spec.containers.length : 0;
  const statuses = arrayAt(status, 'containerStatuses');
  let ready = 0;
  let restarts = 0;
  let lastRestart = 0;
  let hasRunning = false;
  let reason = stringAt(status, 'reason') || stringAt(status, 'phase');
  // As the real printer, from the last container to the first: the first one waiting or terminated names the status.
  for (const s of [...statuses].reverse()) {
    restarts += typeof s.restartCount === 'number' ? s.restartCount : 0;
    const finished = Date.parse(stringAt(objectAt(objectAt(s, 'lastState'), 'terminated'), 'finishedAt'));
    if (!Number.isNaN(finished) && finished > lastRestart) lastRestart = finished;
    const state = objectAt(s, 'state');
    const waiting = stringAt(objectAt(state, 'waiting'), 'reason');
    const terminated = isObject(state.terminated) ? state.terminated : undefined;
    if (waiting) reason = waiting;
    else if (terminated) {
      const signal = typeof terminated.signal === 'number' ? terminated.signal : 0;
      const exitCode = typeof terminated.exitCode === 'number' ? terminated.exitCode : 0;
      reason = stringAt(terminated, 'reason') || (signal !== 0 ? `Signal:${signal}` : `ExitCode:${exitCode}`);
    } else if (s.ready === true && isObject(state.running)) {
      hasRunning = true;
      ready += 1;
    }
  }
  if (reason === 'Completed' && hasRunning) {
    reason = arrayAt(status, 'conditions').some((c) => c.type === 'Ready' && c.status === 'True') ? 'Running' : 'NotReady';
  }
  if (meta.deletionTimestamp) reason = stringAt(status, 'reason') === 'NodeLost' ? 'Unknown' : 'Terminating';
  const restartText = lastRestart > 0 ? `${restarts} (${humanDuration(now - lastRestart)} ago)` : String(restarts);

  const gates = arrayAt(spec, 'readinessGates');
  const conditions = arrayAt(status, 'conditions');
  const gatesTrue = gates.filter((g) => conditions.some((c) => c.type === g.conditionType && c.status === 'True')).length;
  return [
    nameOf(obj),
    `${ready}/${containers}`,
    reason,
    restartText,
    ageOf(obj, now),
    stringAt(status, 'podIP') || '<none>',
    stringAt(spec, 'nodeName') || '<none>',
    stringAt(status, 'nominatedNodeName') || '<none>',
    gates.length > 0 ? `${gatesTrue}/${gates.length}` : '<none>',
  ];
}

function nodeCells(obj: JsonObject, now: number): Cell[] {
  const status = objectAt(obj, 'status');
  const spec = objectAt(obj, 'spec');
  const readyCond = arrayAt(status, 'conditions').find((c) => c.type === 'Ready');
  const states = [readyCond ? (readyCond.status === 'True' ? 'Ready' : 'NotReady') : 'Unknown'];
  if (spec.unschedulable === true) states.push('SchedulingDisabled');
  const roles = new Set<string>();
  for (const [k, v] of Object.entries(objectAt(objectAt(obj, 'metadata'), 'labels'))) {
    if (k.startsWith('node-role.kubernetes.io/') && k.length > 'node-role.kubernetes.io/'.length) roles.add(k.slice('node-role.kubernetes.io/'.length));
    else if (k === 'kubernetes.io/role' && typeof v === 'string' && v !== '') roles.add(v);
  }
  const addresses = arrayAt(status, 'addresses');
  const address = (type: string): string => stringAt(addresses.find((a) => a.type === type) ?? {}, 'address') || '<none>';
  const info = objectAt(status, 'nodeInfo');
  const known = (field: string): string => stringAt(info, field) || '<unknown>';
  return [
    nameOf(obj),
    states.join(','),
    roles.size > 0 ? [...roles].sort().join(',') : '<none>',
    ageOf(obj, now),
    stringAt(info, 'kubeletVersion'),
    address('InternalIP'),
    address('ExternalIP'),
    known('osImage'),
    known('kernelVersion'),
    known('containerRuntimeVersion'),
  ];
}

function objectAt(obj: JsonObject, key: string): JsonObject {
  const v = obj[key];
  return isObject(v) ? v : {};
}

function arrayAt(obj: JsonObject, key: string): JsonObject[] {
  const v = obj[key];
  return Array.isArray(v) ? v.filter(isObject) : [];
}

function stringAt(obj: JsonObject, key: string): string {
  const v = obj[key];
  return typeof v === 'string' ? v : '';
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
