import { it, expect } from 'vitest';
import { startNmiWorld, accessTokenOf, TOKEN_PATH, VAULT } from '../helpers/nmi-world.js';
import { decodeToken } from '../helpers/azure.js';
it('starts', async () => {
  let t = Date.now();
  const w = await startNmiWorld();
  console.log('start ms', Date.now() - t);
  try {
    t = Date.now();
    const id = await w.managedIdentity('id1');
    const p = await w.pod('p1', '127.0.1.11');
    await w.assign(p, id);
    console.log('setup ms', Date.now() - t);
    const r = await w.call('127.0.1.11', `${TOKEN_PATH}?resource=${encodeURIComponent(VAULT)}`);
    console.log(r.status, r.body.slice(0, 100));
    const c = decodeToken(accessTokenOf(r));
    expect(c.appid).toBe(id.clientId);
  } finally { t = Date.now(); await w.stop(); console.log('stop ms', Date.now() - t); }
});
