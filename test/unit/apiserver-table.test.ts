// The API emulator's built-in Table layouts for pods and nodes, cell by cell, as the real server's printers fill them.

import { describe, expect, it } from 'vitest';
import type { JsonObject } from '../../src/sandbox/apiserver/json.js';
import { renderTable } from '../../src/sandbox/apiserver/table.js';

const NOW = Date.parse('2026-01-01T12:00:00Z');
const CREATED = '2026-01-01T11:00:00Z';

function cells(kind: string, obj: object): unknown[] {
  const table = renderTable(kind, undefined, [obj as JsonObject], {}, 'None', NOW) as { rows: { cells: unknown[] }[] };
  return table.rows[0]!.cells;
}

function columns(kind: string): [string, number][] {
  const table = renderTable(kind, undefined, [], {}, 'None', NOW) as { columnDefinitions: { name: string; priority: number }[] };
  return table.columnDefinitions.map((c) => [c.name, c.priority]);
}

describe('pod table', () => {
  it('has the real columns, the wide ones at priority 1', () => {
    expect(columns('Pod')).toEqual([
      ['Name', 0], ['Ready', 0], ['Status', 0], ['Restarts', 0], ['Age', 0],
      ['IP', 1], ['Node', 1], ['Nominated Node', 1], ['Readiness Gates', 1],
    ]);
  });

  it('shows a pending pod with <none> for what it does not have yet', () => {
    const pod = { metadata: { name: 'p', creationTimestamp: CREATED }, spec: { containers: [{ name: 'c' }] }, status: { phase: 'Pending' } };
    expect(cells('Pod', pod)).toEqual(['p', '0/1', 'Pending', '0', '60m', '<none>', '<none>', '<none>', '<none>']);
  });

  it('shows a running pod with its IP, node, restarts with the last restart, and readiness gates', () => {
    const pod = {
      metadata: { name: 'web', creationTimestamp: CREATED },
      spec: { nodeName: 'node-a', containers: [{ name: 'a' }, { name: 'b' }], readinessGates: [{ conditionType: 'x/ready' }, { conditionType: 'y/ready' }] },
      status: {
        phase: 'Running',
        podIP: '10.0.0.7',
        nominatedNodeName: 'node-b',
        conditions: [{ type: 'Ready', status: 'True' }, { type: 'x/ready', status: 'True' }, { type: 'y/ready', status: 'False' }],
        containerStatuses: [
          { name: 'a', ready: true, restartCount: 2, state: { running: {} }, lastState: { terminated: { finishedAt: '2026-01-01T11:55:00Z' } } },
          { name: 'b', ready: true, restartCount: 1, state: { running: {} } },
        ],
      },
    };
    expect(cells('Pod', pod)).toEqual(['web', '2/2', 'Running', '3 (5m ago)', '60m', '10.0.0.7', 'node-a', 'node-b', '1/2']);
  });

  it('names the status after the first container waiting or terminated, and Terminating once deleting', () => {
    const base = { metadata: { name: 'p', creationTimestamp: CREATED }, spec: { containers: [{ name: 'a' }, { name: 'b' }] } };
    const waiting = { ...base, status: { phase: 'Pending', containerStatuses: [{ name: 'a', state: { waiting: { reason: 'ImagePullBackOff' } } }, { name: 'b', state: { waiting: { reason: 'ContainerCreating' } } }] } };
    expect(cells('Pod', waiting)[2]).toBe('ImagePullBackOff');
    const exited = { ...base, status: { phase: 'Failed', containerStatuses: [{ name: 'a', state: { terminated: { exitCode: 3 } } }] } };
    expect(cells('Pod', exited)[2]).toBe('ExitCode:3');
    const evicted = { ...base, status: { phase: 'Failed', reason: 'Evicted' } };
    expect(cells('Pod', evicted)[2]).toBe('Evicted');
    const deleting = { ...base, metadata: { ...base.metadata, deletionTimestamp: CREATED }, status: { phase: 'Running' } };
    expect(cells('Pod', deleting)[2]).toBe('Terminating');
  });
});

describe('node table', () => {
  it('has the real columns, the wide ones at priority 1', () => {
    expect(columns('Node')).toEqual([
      ['Name', 0], ['Status', 0], ['Roles', 0], ['Age', 0], ['Version', 0],
      ['Internal-IP', 1], ['External-IP', 1], ['OS-Image', 1], ['Kernel-Version', 1], ['Container-Runtime', 1],
    ]);
  });

  it('fills status, sorted roles, version, addresses and node info', () => {
    const node = {
      metadata: { name: 'n', creationTimestamp: CREATED, labels: { 'node-role.kubernetes.io/worker': '', 'node-role.kubernetes.io/agent': '', 'kubernetes.io/role': 'infra' } },
      spec: { unschedulable: true },
      status: {
        conditions: [{ type: 'MemoryPressure', status: 'False' }, { type: 'Ready', status: 'True' }],
        addresses: [{ type: 'Hostname', address: 'n' }, { type: 'InternalIP', address: '10.240.0.4' }, { type: 'ExternalIP', address: '20.1.2.3' }],
        nodeInfo: { kubeletVersion: 'v1.32.0', osImage: 'Ubuntu 22.04.4 LTS', kernelVersion: '5.15.0-1064-azure', containerRuntimeVersion: 'containerd://1.7.15' },
      },
    };
    expect(cells('Node', node)).toEqual(['n', 'Ready,SchedulingDisabled', 'agent,infra,worker', '60m', 'v1.32.0', '10.240.0.4', '20.1.2.3', 'Ubuntu 22.04.4 LTS', '5.15.0-1064-azure', 'containerd://1.7.15']);
  });

  it('shows a node without status as Unknown, with <none> and <unknown> placeholders', () => {
    expect(cells('Node', { metadata: { name: 'bare', creationTimestamp: CREATED } })).toEqual(['bare', 'Unknown', '<none>', '60m', '', '<none>', '<none>', '<unknown>', '<unknown>', '<unknown>']);
    const notReady = { metadata: { name: 'nr', creationTimestamp: CREATED }, status: { conditions: [{ type: 'Ready', status: 'Unknown' }] } };
    expect(cells('Node', notReady)[1]).toBe('NotReady');
  });
});
