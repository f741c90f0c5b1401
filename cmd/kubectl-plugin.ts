// `kubectl aad-pod-identity explain <ns>/<pod>` and `kubectl aad-pod-identity doctor`: kubectl finds the executable
// `kubectl-aad_pod_identity` on PATH (it maps the dashes inside a command word to underscores) and passes every
// argument as typed, so --kubeconfig, --context and -n are parsed here, with kubectl's kubeconfig rules.

import { doctorCli } from './lib/doctor-cli.js';
import { explainCli, type CliIo } from './lib/explain-cli.js';
import { runCli } from './lib/run.js';

const PROG = 'kubectl aad-pod-identity';
const USAGE = `usage: ${PROG} explain [flags] <namespace>/<pod> | <pod> [-n NAMESPACE]\n       ${PROG} doctor [flags]\n  (${PROG} <command> --help for the flags)\n`;

async function plugin(args: readonly string[], io: CliIo): Promise<number> {
  const [command, ...rest] = args;
  if (command === 'explain') return explainCli(rest, io, `${PROG} explain`);
  if (command === 'doctor') return doctorCli(rest, io, `${PROG} doctor`);
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    io.stdout(USAGE);
    return command === undefined ? 2 : 0;
  }
  io.stderr(`${PROG}: unknown command "${command}"\n${USAGE}`);
  return 2;
}

runCli(PROG, plugin);
