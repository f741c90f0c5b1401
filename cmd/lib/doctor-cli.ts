// doctor's command line, shared by `npm run doctor` (cmd/doctor.ts) and `kubectl aad-pod-identity doctor`.

import { parseArgs } from 'node:util';
import { runDoctor } from '../../src/doctor/doctor.js';
import { renderDoctor } from '../../src/doctor/render.js';
import { armAccessFor, kubeConfigFor } from './access.js';
import type { CliIo } from './explain-cli.js';
import { errorMessage } from '../../src/common/errors.js';

export const CHECK_KEYS = ['crds', 'mic-leader', 'mic-health', 'nmi', 'nmi-rules', 'kubenet', 'identity', 'role', 'vm-role', 'identity-limit'] as const;

const usage = (prog: string) =>
  `usage: ${prog} [--kubeconfig PATH] [--context NAME] [--cloudconfig azure.json [--arm-endpoint URL]] [--sandbox DIR]\n` +
  '  [--leader-election-namespace NS] [--leader-election-name NAME] [--mic-selector LABELS] [--nmi-selector LABELS]\n' +
  `  [--skip CHECK,...] [--json]\n  checks: ${CHECK_KEYS.join(', ')}\n  exit: 0 all checks pass, 1 some failed, 2 usage error\n`;

export async function doctorCli(args: readonly string[], io: CliIo, prog = 'npm run doctor --'): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...args],
      options: {
        kubeconfig: { type: 'string' },
        context: { type: 'string' },
        cloudconfig: { type: 'string' },
        'arm-endpoint': { type: 'string' },
        sandbox: { type: 'string' },
        'leader-election-namespace': { type: 'string', default: 'default' },
        'leader-election-name': { type: 'string', default: 'aad-pod-identity-mic' },
        'mic-selector': { type: 'string', default: 'app.kubernetes.io/component=mic' },
        'nmi-selector': { type: 'string', default: 'app.kubernetes.io/component=nmi' },
        skip: { type: 'string', default: '' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      allowPositionals: false,
    }));
  } catch (error) {
    io.stderr(`doctor: ${errorMessage(error)}\n${usage(prog)}`);
    return 2;
  }
  if (values.help) {
    io.stdout(usage(prog));
    return 0;
  }
  const str = (k: string) => (typeof values[k] === 'string' ? (values[k] as string) : undefined);
  const skip = new Set((str('skip') ?? '').split(',').map((s) => s.trim()).filter((s) => s !== ''));
  const unknown = [...skip].filter((s) => !(CHECK_KEYS as readonly string[]).includes(s));
  if (unknown.length > 0) {
    io.stderr(`doctor: --skip: unknown check ${unknown.join(', ')} (checks: ${CHECK_KEYS.join(', ')})\n`);
    return 2;
  }
  let kubeConfig;
  let arm;
  try {
    kubeConfig = kubeConfigFor({ kubeconfig: str('kubeconfig'), context: str('context'), sandbox: str('sandbox') }, io.env);
    arm = armAccessFor({ cloudconfig: str('cloudconfig'), 'arm-endpoint': str('arm-endpoint'), sandbox: str('sandbox') }, io.env);
  } catch (error) {
    io.stderr(`doctor: ${errorMessage(error)}\n`);
    return 2;
  }
  const report = await runDoctor(kubeConfig, {
    ...(arm ? { arm } : {}),
    leaderElectionNamespace: str('leader-election-namespace') ?? 'default',
    leaderElectionName: str('leader-election-name') ?? 'aad-pod-identity-mic',
    micSelector: str('mic-selector') ?? '',
    nmiSelector: str('nmi-selector') ?? '',
    skip,
  });
  io.stdout(values.json ? `${JSON.stringify(report, null, 2)}\n` : renderDoctor(report));
  return report.ok ? 0 : 1;
}
