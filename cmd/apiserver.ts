// `npm run apiserver -- --port N [--tls] [--crd-dir config/crd] [--kubeconfig-out FILE] [--host H] [--token T]`:
// runs the Kubernetes API emulator until SIGINT/SIGTERM, after printing one JSON `ready` line.

import { parseArgs } from 'node:util';
import { startApiServer } from '../src/sandbox/apiserver/index.js';
import { parseArgvOrExit, parsePort, runMain, serveUntilSignal } from './lib/serve.js';

interface ApiServerCliConfig {
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
  readonly crdDir: string | undefined;
  readonly kubeconfigOut: string | undefined;
  readonly token: string | undefined;
  readonly historyLimit: number | undefined;
}

function parseConfig(argv: readonly string[]): ApiServerCliConfig {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string', default: '0' },
      tls: { type: 'boolean', default: false },
      'crd-dir': { type: 'string' },
      'kubeconfig-out': { type: 'string' },
      token: { type: 'string' },
      'history-limit': { type: 'string' },
    },
    strict: true,
  });
  const port = parsePort(values.port);
  const history = values['history-limit'] === undefined ? undefined : Number(values['history-limit']);
  if (history !== undefined && (!Number.isInteger(history) || history < 1)) throw new Error(`--history-limit: not a positive integer`);
  return Object.freeze({
    host: values.host ?? '127.0.0.1',
    port,
    tls: values.tls ?? false,
    crdDir: values['crd-dir'],
    kubeconfigOut: values['kubeconfig-out'],
    token: values.token,
    historyLimit: history,
  });
}

async function main(): Promise<void> {
  const config = parseArgvOrExit(parseConfig);
  const server = await startApiServer({
    host: config.host,
    port: config.port,
    tls: config.tls,
    crdDir: config.crdDir,
    token: config.token,
    historyLimit: config.historyLimit,
  });
  if (config.kubeconfigOut) await server.writeKubeconfig(config.kubeconfigOut);
  serveUntilSignal(server, { url: server.url, kubeconfig: config.kubeconfigOut ?? null });
}

runMain('apiserver', main);
