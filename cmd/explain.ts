// `npm run explain -- [--kubeconfig PATH] [--context NAME] [-n NS] [--cloudconfig azure.json [--arm-endpoint URL]]
//   [--sandbox DIR] [--forceNamespaced] [--namespace-identity-policy off|enforce] [--MICNamespace NS] [--mic-service-account NAME]
//   [--client-id ID | --msi-res-id ID | --object-id ID] [--json] <namespace>/<pod>`: why a pod does or does not get a
// token, from MIC's and NMI's own cores (the usage text lists every flag). Works against any cluster the kubeconfig
// points at; ARM is asked when a cloud config is given (--sandbox DIR reads the sandbox's kubeconfig, azure.json, CA
// and ARM endpoint from DIR).

import { explainCli } from './lib/explain-cli.js';
import { runCli } from './lib/run.js';

runCli('explain', explainCli);
