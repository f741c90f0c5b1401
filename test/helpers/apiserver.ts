// Starts the Kubernetes API emulator for a test and hands back a client-node KubeConfig pointing at it.

import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { startApiServer, type ApiServerHandle, type ApiServerOptions } from '../../src/sandbox/apiserver/index.js';

/** The project's four CRDs (config/crd). */
export const CRD_DIR = fileURLToPath(new URL('../../config/crd/', import.meta.url));

export interface TestApiServer {
  readonly server: ApiServerHandle;
  readonly kc: k8s.KubeConfig;
  stop(): Promise<void>;
}

/** An emulator on 127.0.0.1:0 with short bookmark intervals; call stop() in afterEach/afterAll. */
export async function startTestApiServer(opts: ApiServerOptions = {}): Promise<TestApiServer> {
  const server = await startApiServer({ bookmarkIntervalMs: 200, ...opts });
  const kc = kubeConfigFor(server);
  return { server, kc, stop: () => server.stop() };
}

export function kubeConfigFor(server: ApiServerHandle): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  kc.loadFromString(server.kubeconfigYaml);
  return kc;
}
