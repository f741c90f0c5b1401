// `npm run sandbox -- [--state-dir DIR] [--nodes N] [--vmss|--vms] [--network loopback|netns] [--demo]`
//   starts the local world (Kubernetes API + Azure emulators, kubelet, two MIC replicas, one NMI per node), writes
//   DIR/kubeconfig, DIR/ca.pem and DIR/endpoints.json, prints one JSON `ready` line, and runs until SIGINT/SIGTERM
//   (or, with --demo, until the demo ends: exit 0 only if every step did what it said), then removes all it made.
// `npm run sandbox -- exec [--state-dir DIR] <namespace>/<pod> -- <command...>`
//   runs a command as a process of a Running pod (in its network namespace, or bound to its loopback address).

import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { createLogger } from '../src/common/log.js';
import { runDemo } from '../src/sandbox/demo.js';
import { commandForPod, netnsAvailable, startSandbox, type NetworkMode, type PodAttachment } from '../src/sandbox/index.js';
import { errorMessage } from '../src/common/errors.js';

const REPO_ROOT = resolve(fileURLToPath(new URL('..', import.meta.url)));
const DEFAULT_STATE_DIR = join(tmpdir(), 'aad-pod-identity-sandbox');

interface RunConfig {
  readonly stateDir: string | undefined;
  readonly nodes: number;
  readonly compute: 'vmss' | 'vms';
  readonly network: NetworkMode | undefined;
  readonly demo: boolean;
  readonly keep: boolean;
}

const USAGE = `usage:
  npm run sandbox -- [--state-dir DIR] [--nodes N] [--vmss|--vms] [--network loopback|netns] [--demo]
  npm run sandbox -- exec [--state-dir DIR] <namespace>/<pod> -- <command...>
`;

async function main(argv: readonly string[]): Promise<number> {
  if (argv[0] === 'exec') return execInPod(argv.slice(1));
  let config: RunConfig;
  try {
    config = parseRunConfig(argv);
  } catch (error) {
    process.stderr.write(`sandbox: ${errorMessage(error)}\n${USAGE}`);
    return 2;
  }
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(USAGE);
    return 0;
  }

  let network = config.network;
  const support = await netnsAvailable();
  if (network === undefined) network = support.ok ? 'netns' : 'loopback';
  if (network === 'netns' && !support.ok) {
    process.stderr.write(`sandbox: --network netns needs root with ip and iptables (${support.reason}); use --network loopback\n`);
    return 2;
  }

  // The demo runs in a fresh directory it removes; a long-running sandbox keeps its state for kubectl.
  const stateDir = config.stateDir ?? (config.demo ? await mkdtemp(join(tmpdir(), 'aad-sandbox-demo-')) : DEFAULT_STATE_DIR);
  await mkdir(join(stateDir, 'logs'), { recursive: true });
  const logger = createLogger({ level: 'info', format: 'json', base: { app: 'sandbox' }, destination: pino.destination({ dest: join(stateDir, 'logs', 'sandbox.log'), sync: false, mkdir: true }) });

  if (config.demo) process.stdout.write(`Starting the sandbox (${network} network, ${config.nodes} nodes) ...\n`);
  let sandbox;
  try {
    sandbox = await startSandbox({
      stateDir,
      repoRoot: REPO_ROOT,
      env: process.env,
      logger,
      nodes: config.nodes,
      compute: config.compute,
      network,
      // The demo shows the original's behaviour at human speed but does not wait minutes for a resync.
      mic: { replicas: 2, args: ['--leader-election-duration=5s'] },
      // Federated identities are served (spec.mode Federated; identities left Attached behave as without it).
      federation: true,
    });
  } catch (error) {
    process.stderr.write(`sandbox: ${describe(error)}\n`);
    return 1;
  }

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= sandbox.stop().then(async () => {
      if (config.demo && config.stateDir === undefined && !config.keep) await rm(stateDir, { recursive: true, force: true });
    });
    return stopping;
  };

  if (config.demo) {
    let passed = false;
    const interrupted = untilSignal();
    try {
      passed = (await Promise.race([runDemo(sandbox, { repoRoot: REPO_ROOT, say: (line) => process.stdout.write(`${line}\n`) }), interrupted.then(() => false)])) === true;
    } catch (error) {
      process.stdout.write(`✗ the demo failed: ${describe(error)}\n`);
    }
    await stop();
    process.stdout.write('Sandbox stopped; everything it made is removed.\n');
    return passed ? 0 : 1;
  }

  const e = sandbox.endpoints;
  process.stdout.write(
    `${JSON.stringify({ ready: true, stateDir, kubeconfig: e.kubeconfig, endpoints: join(stateDir, 'endpoints.json'), network: e.network, apiServer: e.apiServer, azure: e.azure.url })}\n`,
  );
  process.stderr.write(
    `The sandbox is running (${e.network} network, ${e.nodes.length} nodes). Try:\n` +
      `  kubectl --kubeconfig ${e.kubeconfig} get nodes,pods,azureidentities,azureassignedidentities -A\n` +
      `  npm run sandbox -- exec --state-dir ${stateDir} <namespace>/<pod> -- node examples/pod-token.mjs\n` +
      `  npm run explain -- --sandbox ${stateDir} <namespace>/<pod>\n` +
      'Press Ctrl-C to stop and remove everything.\n',
  );
  await untilSignal();
  await stop();
  return 0;
}

/**
 * Resolves on the first SIGINT/SIGTERM and keeps handling later ones: Ctrl-C reaches this process both from the
 * terminal and relayed by tsx, and a second default-handled SIGINT would kill it before it removed what it made.
 */
function untilSignal(): Promise<void> {
  return new Promise<void>((resolveSignal) => {
    let seen = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      seen++;
      if (seen === 1) resolveSignal();
      else if (seen === 3) process.stderr.write(`sandbox: ${signal} again; still removing namespaces, rules and processes, please wait\n`);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
}

function parseRunConfig(argv: readonly string[]): RunConfig {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      'state-dir': { type: 'string' },
      nodes: { type: 'string', default: '2' },
      vmss: { type: 'boolean', default: false },
      vms: { type: 'boolean', default: false },
      network: { type: 'string' },
      demo: { type: 'boolean', default: false },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  const nodes = Number(values.nodes);
  if (!Number.isInteger(nodes) || nodes < 1 || nodes > 63) throw new Error(`--nodes: expected 1 to 63, got ${values.nodes}`);
  if (values.vmss && values.vms) throw new Error('--vmss and --vms exclude each other');
  if (values.network !== undefined && values.network !== 'loopback' && values.network !== 'netns') {
    throw new Error(`--network: expected loopback or netns, got ${values.network}`);
  }
  return Object.freeze({
    stateDir: values['state-dir'] === undefined ? undefined : resolve(values['state-dir']),
    nodes,
    compute: values.vms ? 'vms' : 'vmss',
    network: values.network as NetworkMode | undefined,
    demo: values.demo ?? false,
    keep: values.keep ?? false,
  });
}

/** `exec [--state-dir DIR] <ns>/<pod> -- <command...>`: runs the command as the pod, exits with its code. */
async function execInPod(argv: readonly string[]): Promise<number> {
  const dash = argv.indexOf('--');
  const head = dash === -1 ? argv : argv.slice(0, dash);
  const command = dash === -1 ? [] : argv.slice(dash + 1);
  const { values, positionals } = parseArgs({ args: [...head], options: { 'state-dir': { type: 'string' } }, allowPositionals: true, strict: true });
  const key = positionals[0];
  if (key === undefined || !key.includes('/') || command.length === 0) {
    process.stderr.write(USAGE);
    return 2;
  }
  const stateDir = resolve(values['state-dir'] ?? DEFAULT_STATE_DIR);
  let pod: PodAttachment & { nmiUrl?: string };
  try {
    pod = JSON.parse(await readFile(join(stateDir, 'pods', `${key.replace('/', '_')}.json`), 'utf8')) as PodAttachment & { nmiUrl?: string };
  } catch {
    process.stderr.write(`sandbox exec: pod ${key} is not running in the sandbox at ${stateDir}\n`);
    return 1;
  }
  const cmd = commandForPod(pod, pod.nmiUrl ?? '', command);
  const [file, ...args] = cmd.argv;
  if (file === undefined) return 2;
  const child = spawn(file, args, { stdio: 'inherit', env: { ...process.env, ...cmd.env } });
  return new Promise((resolveExit) => {
    child.once('exit', (code, signal) => resolveExit(code ?? (signal ? 128 : 1)));
    child.once('error', (error) => {
      process.stderr.write(`sandbox exec: ${error.message}\n`);
      resolveExit(127);
    });
  });
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause instanceof Error ? `: ${describe(error.cause)}` : '';
  return `${error.message}${cause}`;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    process.stderr.write(`sandbox: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    process.exit(1);
  },
);
