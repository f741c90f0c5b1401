// Starts the Kubernetes API emulator for a test and hands back a client-node KubeConfig pointing at it.

import { copyFile, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { startApiServer, type ApiServerHandle, type ApiServerOptions } from '../../src/sandbox/apiserver/index.js';

/** The project's four CRDs (config/crd). */
export const CRD_DIR = fileURLToPath(new URL('../../config/crd/', import.meta.url));

/** CRDs of the original's shape (test/fixtures/original-crds): the AzureAssignedIdentity CRD without status subresource. */
export const ORIGINAL_CRD_DIR = fileURLToPath(new URL('../fixtures/original-crds/', import.meta.url));

/**
 * A temporary CRD directory as a cluster upgraded from the original has it: every CRD of ORIGINAL_CRD_DIR, and ours
 * for the kinds it does not cover. `cleanup()` removes the directory.
 */
export async function upgradedClusterCrdDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'aadpi-crds-'));
  const original = new Set(await readdir(ORIGINAL_CRD_DIR));
  for (const f of original) await copyFile(join(ORIGINAL_CRD_DIR, f), join(dir, f));
  for (const f of await readdir(CRD_DIR)) if (!original.has(f)) await copyFile(join(CRD_DIR, f), join(dir, f));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

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
