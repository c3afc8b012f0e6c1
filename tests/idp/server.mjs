// A real OpenID provider (the npm package `oidc-provider`, 9.13.x) on loopback, used by Registrar's
// connector tests and by the demo. It is deliberately small: everything it adds to the library is
// something Registrar's generic RFC 7591/7592 connector relies on and a production IdP would provide.
//
//   node server.mjs [port]
//
// Environment (all optional):
//   IDP_PORT                  port to listen on when no argv port is given; 0 (default) = any free port
//   IDP_HOST                  interface to bind; default 127.0.0.1 (loopback only)
//   IDP_INITIAL_ACCESS_TOKEN  RFC 7591 initial access token; default "dev-initial-access-token"
//   IDP_ADMIN_TOKEN           bearer token for GET /admin/clients; default "dev-admin-token"
//   IDP_SCOPES                space-separated scope list the provider supports. Unset or containing "*":
//                             also learn every scope a client registers (see learnScopes below).
//   IDP_LISTING               "off": behave like a plain RFC 7591/7592 IdP with no admin API — GET
//                             /admin/clients and DELETE /admin/clients/<id> answer 404, so a client is only
//                             reachable through its own registration access token. Default "on".
//   IDP_SSO_CLIENTS           JSON list of confidential clients for people's single sign-on (authorization code
//                             + PKCE): [{"client_id", "client_secret", "redirect_uris": [...]}]. Default none.
//   IDP_USERS                 JSON list of the company's people, who sign in at /interaction/<uid> with a
//                             username and password: [{"sub", "username", "password", "email",
//                             "email_verified", "name", "groups": [...], "active"}]. The scopes email, profile
//                             and groups carry their claims; "active": false is reported, as some IdPs do for
//                             a disabled account. PATCH /_test/users/<sub> (admin token) changes a person.
//   IDP_REGISTRATION_ENDPOINT advertise this URL as `registration_endpoint` in the discovery document instead of
//                             the provider's own /reg: Registrar's /oauth2/register in front of this IdP, so MCP
//                             clients that discover the endpoint register through Registrar (docs/mcp.md); with
//                             it, `client_id_metadata_document_supported: true` (Registrar admits CIMD clients).
//   IDP_AUTO_CONSENT          "on": every client's authorization request is granted the scopes it asks for once
//                             the person has signed in (no consent screen), as for the SSO clients. Default off.
//   IDP_USAGE_URL             report token issuance to Registrar: POST batches of {idp, client_id, last_used_at}
//                             there (Registrar's /api/v1/usage/), with IDP_USAGE_TOKEN (a usage:write API token)
//                             and IDP_USAGE_IDP (the name of this IdP's connection in Registrar). Batched: one
//                             POST per IDP_USAGE_FLUSH_MS (default 5000) at most, the latest use per client;
//                             a failed POST keeps its batch for the next flush. Unset: no reporting.
//
// Tests see the provider's true contents, in both modes, through /_test/clients (GET, and DELETE
// /_test/clients/<id>; admin token): the IdP operator's console, which Registrar is never configured to use.
//
// When listening it prints exactly one JSON line on stdout: {"issuer": "...", "port": N, "listing": bool}.
// Library warnings go to stderr.

import { generateKeyPair, randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer } from 'node:http';
import process from 'node:process';
import { promisify } from 'node:util';

import Provider, { errors } from 'oidc-provider';
// Internal, but the package has no "exports" map and the version is pinned to 9.13.x.
import instance from 'oidc-provider/lib/helpers/weak_cache.js';

const HOST = process.env.IDP_HOST || '127.0.0.1';
const requestedPort = Number.parseInt(process.argv[2] ?? process.env.IDP_PORT ?? '0', 10);
if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) {
  console.error(`invalid port: ${process.argv[2] ?? process.env.IDP_PORT}`);
  process.exit(2);
}
const INITIAL_ACCESS_TOKEN = process.env.IDP_INITIAL_ACCESS_TOKEN || 'dev-initial-access-token';
const ADMIN_TOKEN = process.env.IDP_ADMIN_TOKEN || 'dev-admin-token';
const LISTING = (process.env.IDP_LISTING ?? 'on').toLowerCase() !== 'off';
const REGISTRATION_ENDPOINT = process.env.IDP_REGISTRATION_ENDPOINT || '';
const AUTO_CONSENT = (process.env.IDP_AUTO_CONSENT ?? 'off').toLowerCase() === 'on';

// ---------------------------------------------------------------------------------------------
// Storage: an unbounded in-memory adapter. The library's own MemoryAdapter is an LRU capped at
// 1000 entries, which silently evicts clients under the scale benchmarks. This one never evicts
// (entries only go away when they expire or are destroyed) and indexes tokens by client so that
// deleting a client can revoke everything issued to it.
// ---------------------------------------------------------------------------------------------

const store = new Map(); // `${model}:${id}` -> { payload, expiresAt }
const byGrant = new Map(); // grantId -> Set of keys
const byClient = new Map(); // clientId -> Set of keys (tokens only; not the Client record itself)
const byUid = new Map(); // Session uid -> id
const byUserCode = new Map(); // userCode -> id

function indexAdd(index, name, key) {
  if (!name) return;
  let keys = index.get(name);
  if (!keys) {
    keys = new Set();
    index.set(name, keys);
  }
  keys.add(key);
}

function indexRemove(index, name, key) {
  const keys = name && index.get(name);
  if (keys) {
    keys.delete(key);
    if (!keys.size) index.delete(name);
  }
}

function removeKey(key) {
  const entry = store.get(key);
  if (!entry) return;
  store.delete(key);
  const { payload } = entry;
  indexRemove(byGrant, payload.grantId, key);
  if (!key.startsWith('Client:')) indexRemove(byClient, payload.clientId, key);
  if (payload.uid && byUid.get(payload.uid) === key) byUid.delete(payload.uid);
  if (payload.userCode && byUserCode.get(payload.userCode) === key) byUserCode.delete(payload.userCode);
}

function liveEntry(key) {
  const entry = store.get(key);
  if (!entry) return undefined;
  if (entry.expiresAt !== undefined && entry.expiresAt <= Date.now()) {
    removeKey(key);
    return undefined;
  }
  return entry;
}

class UnboundedMemoryAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    removeKey(key);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : undefined;
    store.set(key, { payload, expiresAt });
    indexAdd(byGrant, payload.grantId, key);
    if (this.model !== 'Client') indexAdd(byClient, payload.clientId, key);
    if (this.model === 'Session' && payload.uid) byUid.set(payload.uid, key);
    if (payload.userCode) byUserCode.set(payload.userCode, key);
  }

  async find(id) {
    return liveEntry(this.key(id))?.payload;
  }

  async findByUid(uid) {
    const key = byUid.get(uid);
    return key ? liveEntry(key)?.payload : undefined;
  }

  async findByUserCode(userCode) {
    const key = byUserCode.get(userCode);
    return key ? liveEntry(key)?.payload : undefined;
  }

  async consume(id) {
    const entry = liveEntry(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    removeKey(this.key(id));
  }

  async revokeByGrantId(grantId) {
    for (const key of [...(byGrant.get(grantId) ?? [])]) removeKey(key);
    byGrant.delete(grantId);
  }

  // Not part of the adapter interface: drop every token, grant and registration access token that
  // names this client. Synchronous so it completes before the DELETE response is sent.
  static purgeClient(clientId) {
    for (const key of [...(byClient.get(clientId) ?? [])]) removeKey(key);
    byClient.delete(clientId);
  }

  static clients() {
    const clients = [];
    for (const key of store.keys()) {
      if (key.startsWith('Client:')) {
        const entry = liveEntry(key);
        if (entry) clients.push(entry.payload);
      }
    }
    return clients;
  }
}

// ---------------------------------------------------------------------------------------------
// Scopes. Three things in oidc-provider 9 decide which scopes work, all keyed on the provider's own
// `scopes` Set:
//  - registration: a client's `scope` metadata must only name provider scopes (client_schema.js);
//  - token endpoint: without a resource indicator, requested scopes are filtered down to provider
//    scopes (shared/check_resource.js), so an unknown scope silently vanishes from the token;
//  - token endpoint: a provider scope not in the client's `scope` is refused (grant_authorization.js).
// Registrar's scope catalogue is edited at runtime, so by default (IDP_SCOPES unset or "*") the
// provider *learns* scopes: when a client registers or updates, its scopes join the provider's Set
// (the extraClientMetadata validator runs before the scope check). A scope no client ever registered
// is still dropped from tokens, and a client still only gets scopes in its own `scope`. With a fixed
// IDP_SCOPES list, registering any other scope is refused. The Provider deep-clones its
// configuration, so the live Set is reached through the (pinned) library's internal instance cache.
// ---------------------------------------------------------------------------------------------

const scopeList = (process.env.IDP_SCOPES ?? '').split(/\s+/).filter(Boolean);
const LEARN_SCOPES = scopeList.length === 0 || scopeList.includes('*');
const SSO_CLIENTS = JSON.parse(process.env.IDP_SSO_CLIENTS || '[]');
const USERS = new Map(JSON.parse(process.env.IDP_USERS || '[]').map((user) => [user.sub, user]));
const PEOPLE_SCOPES = ['email', 'profile', 'groups'];
const scopes = ['openid', 'offline_access', ...PEOPLE_SCOPES, ...scopeList.filter((scope) => scope !== '*')];
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/; // RFC 6749 §3.3 scope-token

let provider; // assigned below; the validator only runs once requests arrive

function learnScopes(scope) {
  if (!LEARN_SCOPES || typeof scope !== 'string') return;
  const live = instance(provider)?.configuration?.scopes;
  if (!(live instanceof Set)) {
    throw new Error('oidc-provider internals changed: cannot reach configuration.scopes');
  }
  for (const token of scope.split(' ')) {
    if (SCOPE_TOKEN.test(token)) live.add(token);
  }
}

// ---------------------------------------------------------------------------------------------
// Keys: fresh per process; nothing here is meant to outlive the process.
// ---------------------------------------------------------------------------------------------

// Generated off the main thread (the async API, on libuv's pool): generateKeyPairSync('ec') was seen to
// deadlock on a futex once in ~50 starts on Node 20 here, leaving a silent process.
const generateKeyPairAsync = promisify(generateKeyPair);

async function signingKeys() {
  const [rsa, ec] = await Promise.all([
    generateKeyPairAsync('rsa', { modulusLength: 2048 }),
    generateKeyPairAsync('ec', { namedCurve: 'P-256' }),
  ]);
  return {
    keys: [
      { ...rsa.privateKey.export({ format: 'jwk' }), kid: `rsa-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'RS256' },
      { ...ec.privateKey.export({ format: 'jwk' }), kid: `ec-${randomBytes(4).toString('hex')}`, use: 'sig', alg: 'ES256' },
    ],
  };
}

function userClaims(user) {
  return {
    sub: user.sub,
    email: user.email,
    email_verified: user.email_verified !== false,
    name: user.name,
    preferred_username: user.username,
    groups: user.groups ?? [],
    active: user.active !== false,
  };
}

const configuration = {
  adapter: UnboundedMemoryAdapter,
  clients: SSO_CLIENTS.map((client) => ({
    client_id: client.client_id,
    client_secret: client.client_secret,
    redirect_uris: client.redirect_uris,
    grant_types: ['authorization_code'],
    response_types: ['code'],
  })),
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name', 'preferred_username', 'active'],
    groups: ['groups'],
  },
  async findAccount(ctx, sub) {
    const user = USERS.get(sub);
    if (!user) return undefined;
    return { accountId: sub, async claims() { return userClaims(USERS.get(sub) ?? user); } };
  },
  // People's SSO clients are first-party: no consent screen, the grant covers what they ask for.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    if (!AUTO_CONSENT && !SSO_CLIENTS.some((client) => client.client_id === ctx.oidc.client.clientId)) return undefined;
    const grant = new ctx.oidc.provider.Grant({ clientId: ctx.oidc.client.clientId, accountId: ctx.oidc.session.accountId });
    grant.addOIDCScope([...ctx.oidc.requestParamScopes].join(' '));
    await grant.save();
    return grant;
  },
  jwks: await signingKeys(),
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  scopes,
  // Unknown metadata is dropped unless listed here: registrar_id is the correlation marker Registrar
  // sends at create; software_id/software_version (RFC 7591 §2) are not kept by the library otherwise.
  extraClientMetadata: {
    properties: ['registrar_id', 'software_id', 'software_version'],
    validator(ctx, key, value, metadata) {
      if (key === 'registrar_id') learnScopes(metadata.scope); // once per validation: the first property
      if (value !== undefined && (typeof value !== 'string' || value.length === 0 || value.length > 255)) {
        throw new errors.InvalidClientMetadata(`${key} must be a non-empty string of at most 255 characters`);
      }
    },
  },
  features: {
    // No interactive login here: Registrar's clients are client_credentials-only.
    devInteractions: { enabled: false },
    registration: {
      enabled: true,
      initialAccessToken: INITIAL_ACCESS_TOKEN,
      // A client Registrar names (a Client ID Metadata Document client: its id is its document's https URL,
      // sent as registrar_client_id) gets that id; any other gets a random one, as by default.
      idFactory(ctx) {
        const chosen = ctx.oidc.body?.registrar_client_id;
        if (typeof chosen === 'string' && chosen.startsWith('https://') && chosen.length <= 2000) return chosen;
        return randomBytes(16).toString('base64url');
      },
    },
    registrationManagement: {
      enabled: true,
      rotateRegistrationAccessToken: true,
    },
    clientCredentials: { enabled: true },
    introspection: {
      enabled: true,
      // Any authenticated confidential client (a resource server) may introspect, but a token whose
      // client no longer exists is reported inactive even if purging missed it.
      async allowedPolicy(ctx, caller, token) {
        if (caller.clientAuthMethod === 'none' && token.clientId !== caller.clientId) return false;
        return Boolean(await ctx.oidc.provider.Client.find(token.clientId));
      },
    },
    revocation: {
      enabled: true,
      async allowedPolicy(ctx, caller, token) {
        return token.clientId === caller.clientId;
      },
    },
  },
};

// The issuer must name the real port, which is only known after binding when port 0 is asked for:
// bind a plain listener first, read the port, then attach the provider's request handler.
const httpServer = createServer();
await new Promise((resolve, reject) => {
  httpServer.once('error', reject);
  httpServer.listen(requestedPort, HOST, resolve);
});
const { port } = httpServer.address();
const issuer = `http://${HOST}:${port}`;

provider = new Provider(issuer, configuration);

// Deleting a client must also kill what it was issued: client_credentials tokens carry no grant,
// so the library itself would keep them valid until they expire.
provider.on('registration_delete.success', (ctx, client) => {
  UnboundedMemoryAdapter.purgeClient(client.clientId);
});

// Usage reporting: every issued access token (client credentials or otherwise) notes its client's last use.
const USAGE_URL = process.env.IDP_USAGE_URL || '';
const USAGE_TOKEN = process.env.IDP_USAGE_TOKEN || '';
const USAGE_IDP = process.env.IDP_USAGE_IDP || '';
const USAGE_FLUSH_MS = Math.max(50, Number.parseInt(process.env.IDP_USAGE_FLUSH_MS ?? '5000', 10) || 5000);
const pendingUsage = new Map(); // client_id -> ISO time of its latest token
let flushing = false;

function noteUsage(token) {
  if (USAGE_URL && token?.clientId) pendingUsage.set(token.clientId, new Date().toISOString());
}

async function flushUsage() {
  if (flushing || pendingUsage.size === 0) return;
  flushing = true;
  const batch = [...pendingUsage.entries()];
  pendingUsage.clear();
  try {
    const response = await fetch(USAGE_URL, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Token ${USAGE_TOKEN}` },
      body: JSON.stringify(batch.map(([clientId, when]) => ({ idp: USAGE_IDP, client_id: clientId, last_used_at: when }))),
      signal: AbortSignal.timeout(10000),
    });
    if (!response.ok) throw new Error(`usage report refused: ${response.status} ${await response.text()}`);
  } catch (error) {
    console.error(String(error));
    for (const [clientId, when] of batch) if (!pendingUsage.has(clientId)) pendingUsage.set(clientId, when);
  } finally {
    flushing = false;
  }
}

if (USAGE_URL) {
  provider.on('client_credentials.saved', noteUsage);
  provider.on('access_token.saved', noteUsage);
  setInterval(flushUsage, USAGE_FLUSH_MS).unref();
}

const HIDDEN_CLIENT_FIELDS = new Set(['client_secret']);

// People's sign-in page: a plain form, the username and password checked against IDP_USERS.
function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

function loginPage(uid, error = '') {
  return `<!doctype html><html><head><title>Company sign-in</title></head><body>
<h1>Company sign-in</h1>${error ? `<p id="error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${uid}/login">
<label>Username <input name="username" id="username" autocomplete="username"></label>
<label>Password <input name="password" id="password" type="password" autocomplete="current-password"></label>
<button type="submit" id="sign-in">Sign in</button></form></body></html>`;
}

async function readBody(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return Buffer.concat(chunks).toString();
}

// Discovery (RFC 8414 / OpenID Discovery): the registration endpoint is Registrar's when one is configured.
// The issuer stays this IdP's: a client checks it against where it fetched the metadata (RFC 8414 §3.3).
provider.use(async (ctx, next) => {
  await next();
  const discoveryPaths = ['/.well-known/openid-configuration', '/.well-known/oauth-authorization-server'];
  if (REGISTRATION_ENDPOINT && discoveryPaths.includes(ctx.path) && ctx.body) {
    ctx.body.registration_endpoint = REGISTRATION_ENDPOINT;
    // Registrar in front also admits MCP clients by Client ID Metadata Document (docs/cimd.md): it registers
    // them here with the document URL as client_id, so a client may present that URL.
    ctx.body.client_id_metadata_document_supported = true;
  }
});

provider.use(async (ctx, next) => {
  const match = /^\/interaction\/([^/]+)(\/login)?$/.exec(ctx.path);
  if (!match) {
    await next();
    return;
  }
  ctx.set('Cache-Control', 'no-store');
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (ctx.method === 'GET' && !match[2]) {
    ctx.type = 'html';
    ctx.body = loginPage(details.uid);
    return;
  }
  if (ctx.method !== 'POST' || !match[2]) {
    ctx.status = 405;
    return;
  }
  const form = new URLSearchParams(await readBody(ctx.req));
  const user = [...USERS.values()].find((candidate) => candidate.username === form.get('username'));
  const given = Buffer.from(form.get('password') ?? '');
  const expected = Buffer.from(user?.password ?? '');
  if (!user || given.length !== expected.length || !timingSafeEqual(given, expected)) {
    ctx.type = 'html';
    ctx.status = 401;
    ctx.body = loginPage(details.uid, 'Wrong username or password.');
    return;
  }
  const redirectTo = await provider.interactionResult(
    ctx.req,
    ctx.res,
    { login: { accountId: user.sub } },
    { mergeWithLastSubmission: false },
  );
  ctx.redirect(redirectTo);
});

// The IdP operator changes a person (disable them, move them between groups): PATCH /_test/users/<sub>.
provider.use(async (ctx, next) => {
  const match = /^\/_test\/users\/([^/]+)$/.exec(ctx.path);
  if (!match) {
    await next();
    return;
  }
  if (!adminAuthorized(ctx)) {
    ctx.status = 401;
    ctx.body = { error: 'invalid_token' };
    return;
  }
  const user = USERS.get(decodeURIComponent(match[1]));
  if (!user || ctx.method !== 'PATCH') {
    ctx.status = user ? 405 : 404;
    return;
  }
  Object.assign(user, JSON.parse(await readBody(ctx.req)));
  ctx.body = userClaims(user);
});

function adminAuthorized(ctx) {
  const header = ctx.get('authorization');
  const match = /^Bearer\s+(.+)$/i.exec(header);
  if (!match) return false;
  const given = Buffer.from(match[1]);
  const expected = Buffer.from(ADMIN_TOKEN);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

// RFC 7591 has no list endpoint; Registrar's reconciliation needs one. Paged with offset/limit,
// ordered by client_id so pages are stable.
// PUT /admin/clients/<client_id>: replace an adopted client's metadata (no registration access token either).
// DELETE /admin/clients/<client_id>: remove a client without its registration access token, and purge
// what it was issued. A real IdP's admin API offers the same; Registrar uses it to remove a duplicate
// left by a create that crashed before Registrar stored the client_id (and so never got its token).
// The admin API below answers under /admin/clients when listing is on, and always under /_test/clients
// (the operator's console for tests). Returns the path with the prefix replaced by /admin, or null.
function adminPath(path) {
  if (path.startsWith('/_test/clients')) return `/admin${path.slice('/_test'.length)}`;
  if (LISTING && path.startsWith('/admin/clients')) return path;
  return null;
}

provider.use(async (ctx, next) => {
  const match = /^\/admin\/clients\/([^/]+)$/.exec(adminPath(ctx.path) ?? '');
  if (!match) {
    await next();
    return;
  }
  ctx.set('Cache-Control', 'no-store');
  if (ctx.method !== 'DELETE' && ctx.method !== 'PUT') {
    ctx.status = 405;
    ctx.set('Allow', 'DELETE, PUT');
    ctx.body = { error: 'invalid_request', error_description: 'method not allowed' };
    return;
  }
  if (!adminAuthorized(ctx)) {
    ctx.status = 401;
    ctx.set('WWW-Authenticate', 'Bearer error="invalid_token"');
    ctx.body = { error: 'invalid_token', error_description: 'admin token required' };
    return;
  }
  const clientId = decodeURIComponent(match[1]);
  const adapter = new UnboundedMemoryAdapter('Client');
  if (!(await adapter.find(clientId))) {
    ctx.status = 404;
    ctx.body = { error: 'invalid_request', error_description: 'no such client' };
    return;
  }
  if (ctx.method === 'PUT') {
    // PUT /admin/clients/<client_id>: replace a client's metadata without its registration access token (a
    // client Registrar adopted: found here, never registered through Registrar). Its secret and id are kept.
    const existing = await adapter.find(clientId);
    let body;
    try {
      body = JSON.parse(await readBody(ctx.req));
    } catch {
      body = null;
    }
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      ctx.status = 400;
      ctx.body = { error: 'invalid_client_metadata', error_description: 'a JSON object is required' };
      return;
    }
    const kept = Object.fromEntries(
      Object.entries(existing).filter(([key]) => key === 'client_secret' || key.startsWith('client_id')),
    );
    const updated = { ...body, ...kept, client_id: clientId };
    await adapter.upsert(clientId, updated);
    ctx.body = Object.fromEntries(Object.entries(updated).filter(([key]) => !HIDDEN_CLIENT_FIELDS.has(key)));
    return;
  }
  await adapter.destroy(clientId);
  UnboundedMemoryAdapter.purgeClient(clientId);
  ctx.status = 204;
});

provider.use(async (ctx, next) => {
  if (adminPath(ctx.path) !== '/admin/clients') {
    await next();
    return;
  }
  ctx.set('Cache-Control', 'no-store');
  if (ctx.method !== 'GET') {
    ctx.status = 405;
    ctx.set('Allow', 'GET');
    ctx.body = { error: 'invalid_request', error_description: 'method not allowed' };
    return;
  }
  if (!adminAuthorized(ctx)) {
    ctx.status = 401;
    ctx.set('WWW-Authenticate', 'Bearer error="invalid_token"');
    ctx.body = { error: 'invalid_token', error_description: 'admin token required' };
    return;
  }
  const offset = Math.max(0, Number.parseInt(ctx.query.offset ?? '0', 10) || 0);
  const limit = Math.min(1000, Math.max(1, Number.parseInt(ctx.query.limit ?? '1000', 10) || 1000));
  const all = UnboundedMemoryAdapter.clients()
    .map((metadata) => Object.fromEntries(
      Object.entries(metadata).filter(([key]) => !HIDDEN_CLIENT_FIELDS.has(key)),
    ))
    .sort((a, b) => (a.client_id < b.client_id ? -1 : a.client_id > b.client_id ? 1 : 0));
  ctx.body = { total: all.length, offset, limit, clients: all.slice(offset, offset + limit) };
});

httpServer.on('request', provider.callback());

process.stdout.write(`${JSON.stringify({ issuer, port, listing: LISTING })}\n`);

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  console.error(`received ${signal}, closing`);
  httpServer.close(() => process.exit(0));
  httpServer.closeIdleConnections();
  // Do not let a stuck keep-alive connection hold the process hostage.
  setTimeout(() => {
    httpServer.closeAllConnections();
    process.exit(0);
  }, 2000).unref();
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
