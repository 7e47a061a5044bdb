// A real OpenID Provider on loopback for the OIDC tests: panva's certified `oidc-provider`
// (pinned in package-lock.json). tests/oidc_op.py starts it; everything comes from the env:
//
//   OP_PORT           port to listen on (127.0.0.1 only); the issuer is http://127.0.0.1:<port>
//   OP_GATEWAY_URL    the gateway's base URL: interlock-web's redirect is <it>/v1/auth/callback
//   OP_WEB_SECRET     interlock-web's client secret
//   OP_ID_TOKEN_TTL   ID token lifetime in seconds (short in tests)
//   OP_KEYS_FILE      JSON {keys: [private JWK, ...]} of signing keys, the first one signs;
//                     created with one key when missing
//   OP_ROTATE         "keep" | "drop": before starting, put a NEW key first in OP_KEYS_FILE and
//                     keep the old ones published (keep) or remove them (drop)
//   OP_STATE_FILE     where sessions, grants, codes and refresh tokens are kept, so that a restart
//                     (rotation) keeps them valid
//   OP_COOKIE_KEY     the key the OP's cookies are signed with (kept across restarts)
//   OP_DEVICE_INTERVAL  the polling interval (s) the device authorization answer names (5 when
//                     unset, RFC 8628's default; oidc-provider names none by itself)
//
// Accounts: alice (groups [sre-approvers]), bob (groups [sre]), carol (no groups); the dev login
// form (devInteractions) accepts any password; consent is granted without a page. Prints
// "listening <issuer>" on stdout when ready.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';

import Provider, { interactionPolicy } from 'oidc-provider';

const env = (name, fallback) => {
  const value = process.env[name] ?? fallback;
  if (value === undefined) throw new Error(`${name} is not set`);
  return value;
};

const port = Number(env('OP_PORT'));
const issuer = `http://127.0.0.1:${port}`;
const gateway = env('OP_GATEWAY_URL').replace(/\/+$/, '');
const idTokenTtl = Number(env('OP_ID_TOKEN_TTL', '300'));
const keysFile = env('OP_KEYS_FILE');
const stateFile = env('OP_STATE_FILE');

// ---- signing keys -------------------------------------------------------------------------
function newKey() {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return {
    ...privateKey.export({ format: 'jwk' }),
    kid: randomBytes(8).toString('hex'),
    alg: 'RS256',
    use: 'sig',
  };
}

let keys = existsSync(keysFile) ? JSON.parse(readFileSync(keysFile, 'utf8')).keys : [];
const rotate = process.env.OP_ROTATE;
if (keys.length === 0) {
  keys = [newKey()];
} else if (rotate === 'keep') {
  keys = [newKey(), ...keys];
} else if (rotate === 'drop') {
  keys = [newKey()];
} else if (rotate) {
  throw new Error(`OP_ROTATE must be keep or drop, not ${rotate}`);
}
writeFileSync(keysFile, JSON.stringify({ keys }), { mode: 0o600 });

// ---- storage: in memory, written through to a file so a restart keeps it ------------------
const store = new Map(
  existsSync(stateFile) ? Object.entries(JSON.parse(readFileSync(stateFile, 'utf8'))) : [],
);
const now = () => Math.floor(Date.now() / 1000);
function save() {
  for (const [k, v] of store) if (v.exp && v.exp < now()) store.delete(k);
  writeFileSync(`${stateFile}.tmp`, JSON.stringify(Object.fromEntries(store)));
  renameSync(`${stateFile}.tmp`, stateFile);
}

class FileAdapter {
  constructor(name) { this.name = name; }

  key(id) { return `${this.name}:${id}`; }

  async upsert(id, payload, expiresIn) {
    store.set(this.key(id), { payload, exp: expiresIn ? now() + expiresIn : undefined });
    save();
  }

  async find(id) {
    const hit = store.get(this.key(id));
    if (!hit || (hit.exp && hit.exp < now())) return undefined;
    return hit.payload;
  }

  async findBy(field, value) {
    for (const [k, v] of store) {
      if (k.startsWith(`${this.name}:`) && v.payload[field] === value
          && !(v.exp && v.exp < now())) return v.payload;
    }
    return undefined;
  }

  async findByUserCode(userCode) { return this.findBy('userCode', userCode); }

  async findByUid(uid) { return this.findBy('uid', uid); }

  async consume(id) {
    const hit = store.get(this.key(id));
    if (hit) { hit.payload.consumed = now(); save(); }
  }

  async destroy(id) { store.delete(this.key(id)); save(); }

  async revokeByGrantId(grantId) {
    for (const [k, v] of store) if (v.payload.grantId === grantId) store.delete(k);
    save();
  }
}

// ---- accounts ------------------------------------------------------------------------------
const ACCOUNTS = {
  alice: { name: 'Alice Approver', groups: ['sre-approvers'] },
  bob: { name: 'Bob Operator', groups: ['sre'] },
  carol: { name: 'Carol Nobody', groups: [] },
};

async function findAccount(ctx, id) {
  const who = ACCOUNTS[id];
  if (!who) return undefined;
  return {
    accountId: id,
    async claims() {
      return {
        sub: id,
        name: who.name,
        preferred_username: id,
        email: `${id}@example.test`,
        email_verified: true,
        groups: who.groups,
      };
    },
  };
}

// ---- consent: granted without a page (first-party clients) ---------------------------------
async function loadExistingGrant(ctx) {
  const grantId = ctx.oidc.result?.consent?.grantId
    || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
  const grant = grantId
    ? await ctx.oidc.provider.Grant.find(grantId)
    : new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId,
    });
  if (!grant) return undefined;
  grant.addOIDCScope([...ctx.oidc.requestParamScopes].join(' '));
  const claims = ctx.oidc.requestParamClaims;
  if (claims && claims.size) grant.addOIDCClaims([...claims]);
  await grant.save();
  return grant;
}

// oidc-provider asks native clients (interlock-cli) for consent on every authorization; these are
// first-party clients, so that page is skipped too.
const policy = interactionPolicy.base();
policy.get('consent').checks.remove('native_client_prompt');

// ---- the provider --------------------------------------------------------------------------
const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'interlock-web',
      client_secret: env('OP_WEB_SECRET'),
      redirect_uris: [`${gateway}/v1/auth/callback`],
      post_logout_redirect_uris: [`${gateway}/`],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'interlock-cli',
      application_type: 'native', // loopback redirect: any port (RFC 8252 §7.3)
      redirect_uris: ['http://127.0.0.1/callback'],
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token',
        'authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
    },
    {
      // Another application of the same company: its ID tokens are not for Interlock.
      client_id: 'other-app',
      application_type: 'native',
      redirect_uris: ['http://127.0.0.1/callback'],
      grant_types: ['urn:ietf:params:oauth:grant-type:device_code'],
      response_types: [],
      token_endpoint_auth_method: 'none',
    },
  ],
  jwks: { keys },
  cookies: { keys: [env('OP_COOKIE_KEY')] },
  adapter: FileAdapter,
  findAccount,
  loadExistingGrant,
  interactions: { policy },
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  scopes: ['openid', 'offline_access', 'profile', 'email', 'groups'],
  conformIdTokenClaims: false, // the claims of the granted scopes go into the ID token itself
  issueRefreshToken: async (ctx, client) => client.grantTypeAllowed('refresh_token'),
  features: {
    devInteractions: { enabled: true },
    deviceFlow: { enabled: true },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
  },
  ttl: {
    AccessToken: 3600,
    AuthorizationCode: 120,
    DeviceCode: 600,
    Grant: 86400,
    IdToken: idTokenTtl,
    Interaction: 600,
    RefreshToken: 86400,
    Session: 86400,
  },
});

const deviceInterval = Number(env('OP_DEVICE_INTERVAL', '5'));
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/device/auth' && ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
    ctx.body.interval = deviceInterval;
  }
});

const server = provider.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${issuer}\n`);
});
// Stop at once (state is written as it changes): a client's kept-alive connection must not hold
// a restart (rotation) on the same port.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close();
    server.closeAllConnections();
    process.exit(0);
  });
}
