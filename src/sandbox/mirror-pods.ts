// The sandbox runs MIC and NMI as processes on the host, not as pods; a kubelet reports such processes as mirror
// pods (as it does static pods), so that what reads the cluster — kubectl, `doctor` — finds them where a real
// cluster has them: NMI pods per node (hostNetwork, label app.kubernetes.io/component=nmi) and MIC pods named after
// their leader-election instance, each with its readiness probe's real port and Ready when the process is up.

import { Agent, fetch, type Dispatcher } from 'undici';
import { realClock } from '../common/clock.js';

export interface MirrorPod {
  readonly namespace: string;
  readonly name: string;
  readonly component: 'nmi' | 'mic';
  readonly nodeName: string;
  /** The address the probe port answers on (status.podIP and hostIP, as for a hostNetwork pod). */
  readonly ip: string;
  readonly probePort: number;
}

export interface MirrorPods {
  /** Creates (or replaces) the pod and reports it Running and Ready. */
  put(pod: MirrorPod): Promise<void>;
  remove(namespace: string, name: string): Promise<void>;
}

export function mirrorPods(opts: { apiUrl: string; token: string; caPem?: string }): MirrorPods {
  const dispatcher: Dispatcher | undefined = opts.caPem ? new Agent({ connect: { ca: opts.caPem } }) : undefined;
  const request = async (method: string, path: string, body?: unknown, contentType = 'application/json') => {
    const res = await fetch(`${opts.apiUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${opts.token}`, ...(body !== undefined ? { 'content-type': contentType } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      ...(dispatcher ? { dispatcher } : {}),
    });
    return { status: res.status, text: await res.text() };
  };
  const remove = async (namespace: string, name: string) => {
    const res = await request('DELETE', `/api/v1/namespaces/${namespace}/pods/${name}?gracePeriodSeconds=0`);
    if (res.status !== 200 && res.status !== 404) throw new Error(`deleting mirror pod ${namespace}/${name}: HTTP ${res.status} ${res.text}`);
  };
  return {
    remove,
    async put(pod) {
      const ns = await request('POST', '/api/v1/namespaces', { apiVersion: 'v1', kind: 'Namespace', metadata: { name: pod.namespace } });
      if (ns.status !== 201 && ns.status !== 409) throw new Error(`namespace ${pod.namespace}: HTTP ${ns.status} ${ns.text}`);
      await remove(pod.namespace, pod.name);
      const probe = { httpGet: { path: '/readyz', port: pod.probePort }, periodSeconds: 10 };
      const created = await request('POST', `/api/v1/namespaces/${pod.namespace}/pods`, {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name: pod.name,
          namespace: pod.namespace,
          labels: { 'app.kubernetes.io/name': 'aad-pod-identity', 'app.kubernetes.io/component': pod.component },
          annotations: { 'kubernetes.io/config.mirror': 'sandbox', 'kubernetes.io/config.source': 'file' },
        },
        spec: {
          nodeName: pod.nodeName,
          hostNetwork: true,
          containers: [{ name: pod.component, image: `sandbox/${pod.component}`, readinessProbe: probe, livenessProbe: { ...probe, httpGet: { ...probe.httpGet, path: '/healthz' } } }],
        },
      });
      if (created.status !== 201) throw new Error(`mirror pod ${pod.namespace}/${pod.name}: HTTP ${created.status} ${created.text}`);
      const now = new Date(realClock.now()).toISOString();
      const status = await request(
        'PATCH',
        `/api/v1/namespaces/${pod.namespace}/pods/${pod.name}/status`,
        {
          status: {
            phase: 'Running',
            podIP: pod.ip,
            podIPs: [{ ip: pod.ip }],
            hostIP: pod.ip,
            startTime: now,
            containerStatuses: [{ name: pod.component, image: `sandbox/${pod.component}`, imageID: '', ready: true, started: true, restartCount: 0, state: { running: { startedAt: now } } }],
            conditions: ['PodScheduled', 'Initialized', 'ContainersReady', 'Ready'].map((type) => ({ type, status: 'True', lastTransitionTime: now })),
          },
        },
        'application/merge-patch+json',
      );
      if (status.status !== 200) throw new Error(`mirror pod ${pod.namespace}/${pod.name} status: HTTP ${status.status} ${status.text}`);
    },
  };
}
