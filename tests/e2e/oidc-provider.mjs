// A real OpenID provider for the tests: npm's `oidc-provider` (a certified OpenID Connect
// implementation), configured from the JSON file named on the command line by tests/oidc.py.
//
// It issues JWT access tokens for one resource server (the DICOMweb server, audience
// `config.audience`): client_credentials for machine clients, authorization code + PKCE with a
// login form (oidc-provider's development interactions: any password) for the users. Scopes
// come from each client's `scope` (client_credentials) or each user's `scope` (authorization
// code); `dicomweb_labels` and `roles` claims from the client's or user's `labels` / `roles`.
// Every request is logged as one JSON line on stdout (`{"request": "GET /jwks"}`), so tests can
// count JWKS fetches.
import http from 'node:http';
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const RESOURCE_SCOPES = 'dicomweb:read dicomweb:write dicomweb:delete dicomweb:admin';

function claimsOf(entry) {
  const claims = {};
  if (entry?.labels) claims.dicomweb_labels = entry.labels;
  if (entry?.roles) claims.roles = entry.roles;
  return claims;
}

function allowed(requested, permitted) {
  const mine = new Set((permitted || '').split(' ').filter(Boolean));
  return [...requested].filter((scope) => mine.has(scope)).join(' ');
}

const clients = config.clients.map(({ labels, roles, ...metadata }) => metadata);
const clientExtras = Object.fromEntries(config.clients.map((c) => [c.client_id, c]));

const provider = new Provider(config.issuer, {
  clients,
  clientDefaults: { id_token_signed_response_alg: config.signing_alg || 'RS256' },
  jwks: config.jwks,
  cookies: { keys: ['dicomweb-tests-cookie-key'] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'offline_access', ...RESOURCE_SCOPES.split(' ')],
  claims: { openid: ['sub'], profile: ['name'] },
  clientBasedCORS: () => true,
  ttl: {
    AccessToken: config.access_token_ttl || 600,
    ClientCredentials: config.access_token_ttl || 600,
    IdToken: 3600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // OHIF (oidc-client-ts) sends no `resource`: every token is for the DICOMweb server.
      defaultResource: () => config.audience,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (indicator !== config.audience) throw new Provider.errors.InvalidTarget();
        return {
          scope: RESOURCE_SCOPES,
          audience: config.audience,
          accessTokenFormat: 'jwt',
          accessTokenTTL: config.access_token_ttl || 600,
          jwt: { sign: { alg: config.signing_alg || 'RS256' } },
        };
      },
    },
  },
  // First-party clients: no consent screen. The grant holds the scopes the user is allowed.
  async loadExistingGrant(ctx) {
    const grantId = ctx.oidc.result?.consent?.grantId
      || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
    if (grantId) return ctx.oidc.provider.Grant.find(grantId);
    const user = config.users[ctx.oidc.session.accountId];
    if (!user) return undefined;
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    const scopes = allowed(ctx.oidc.requestParamScopes, user.scope);
    // The dicomweb scopes are the provider's too (client metadata may name them): grant them
    // as such and for the resource, where they end up in the access token.
    grant.addOIDCScope(['openid profile offline_access', scopes].join(' ').trim());
    if (scopes) grant.addResourceScope(config.audience, scopes);
    await grant.save();
    return grant;
  },
  async findAccount(ctx, id) {
    if (!config.users[id]) return undefined;
    return {
      accountId: id,
      claims: async () => ({ sub: id, name: config.users[id].name || id }),
    };
  },
  async extraTokenClaims(ctx, token) {
    if (token.accountId) return claimsOf(config.users[token.accountId]);
    return claimsOf(clientExtras[token.clientId]);
  },
  // Client credentials: the scopes the client is registered with, nothing more.
  async issueRefreshToken() {
    return false;
  },
});
provider.proxy = false;

const callback = provider.callback();
const server = http.createServer((req, res) => {
  console.log(JSON.stringify({ request: `${req.method} ${req.url.split('?')[0]}` }));
  callback(req, res);
});
server.listen(config.port, '127.0.0.1', () => {
  console.log(JSON.stringify({ ready: config.issuer }));
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
