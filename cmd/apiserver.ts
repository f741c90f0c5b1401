// `npm run apiserver -- --port N [--tls] [--crd-dir config/crd] [--kubeconfig-out FILE] [--host H] [--token T]`:
// runs the Kubernetes API emulator until SIGINT/SIGTERM, after printing one JSON `ready` line.

import { parseArgs } from 'node:util';
import { startApiServer } from '../src/sandbox/apiserver/index.js';

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
  const port = Number(values.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port: not a port number: ${values.port}`);
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
  let config: ApiServerCliConfig;
  try {
    config = parseConfig(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  }
  const server = await startApiServer({
    host: config.host,
    port: config.port,
    tls: config.tls,
    crdDir: config.crdDir,
    token: config.token,
    historyLimit: config.historyLimit,
  });
  if (config.kubeconfigOut) await server.writeKubeconfig(config.kubeconfigOut);
  process.stdout.write(`${JSON.stringify({ ready: true, url: server.url, kubeconfig: config.kubeconfigOut ?? null })}\n`);
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    server.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`stop failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`apiserver failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  if (err instanceof Error && err.cause) process.stderr.write(`cause: ${String(err.cause instanceof Error ? err.cause.message : err.cause)}\n`);
  process.exit(1);
});
