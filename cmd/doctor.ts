// `npm run doctor -- [--kubeconfig PATH] [--context NAME] [--cloudconfig azure.json [--arm-endpoint URL]] [--sandbox DIR]
//   [--skip CHECK,...] [--json]`: the cluster-wide preflight for admins (src/doctor). Exit 0 only when every check passes.

import { doctorCli } from './lib/doctor-cli.js';
import { runCli } from './lib/run.js';

runCli('doctor', doctorCli);
