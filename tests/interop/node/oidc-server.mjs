// oidc-provider (a certified OpenID Connect server, npm, pinned in package.json) configured for
// the interop suite and started on 127.0.0.1, port 0.
//
//   node oidc-server.mjs '<config JSON>'
//
// The config is {"clients": [...client metadata...], "ttl": {"AccessToken": s, ...}}; the clients
// are registered statically (the test generates their keys with the SDK's own key helper first).
// When the server listens it prints ONE line of JSON on stdout:
//   {"server":"oidc-provider","version":"9.13.3","issuer":...,"port":...,"token_endpoint":...,
//    "authorization_endpoint":...,"registration_endpoint":...,"introspection_endpoint":...,
//    "userinfo_endpoint":...,"revocation_endpoint":...}
// It exits when its stdin closes or its parent process goes away, so it never outlives a test.
//
// What is switched on (everything else is oidc-provider's default):
//   - client_credentials (features.clientCredentials), RFC 7591 registration (features.registration,
//     open: no initial access token), introspection (so a test can ask the server whether a token
//     is live), revocation;
//   - RS256, RS384 and ES384 client assertions (private_key_jwt; RS384 is off by default);
//   - refresh tokens for every client allowed the refresh_token grant, rotated on every use
//     (presenting a rotated one revokes the whole grant: that is oidc-provider's rule);
//   - the development login and consent forms (devInteractions), which a test submits over HTTP;
//   - PKCE required for every authorization request (S256 is the only method oidc-provider takes).
import { createServer } from 'node:http'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'

import Provider from 'oidc-provider'

const config = JSON.parse(process.argv[2] ?? '{}')
const { version } = JSON.parse(
  readFileSync(new URL('./node_modules/oidc-provider/package.json', import.meta.url), 'utf8'),
)

// Never outlive the test: stdin closing (the test ended or died) or a new parent ends the server.
const parent = process.ppid
process.stdin.on('end', () => process.exit(0))
process.stdin.on('error', () => process.exit(0))
process.stdin.resume()
setInterval(() => {
  if (process.ppid !== parent) process.exit(0)
}, 500).unref()

// Bind first: the issuer has to name the port the kernel picked.
let handler = (_req, res) => {
  res.statusCode = 503
  res.end()
}
const server = createServer((req, res) => handler(req, res))
await new Promise((resolve, reject) => {
  server.once('error', reject)
  server.listen(0, '127.0.0.1', resolve)
})
const { port } = server.address()
const issuer = `http://127.0.0.1:${port}`

const provider = new Provider(issuer, {
  clients: config.clients ?? [],
  features: {
    devInteractions: { enabled: true },
    clientCredentials: { enabled: true },
    registration: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
  },
  enabledJWA: {
    clientAuthSigningAlgValues: ['RS256', 'RS384', 'ES384'],
  },
  // Scopes the server knows; anything else a client asks for is dropped silently.
  scopes: [
    'openid',
    'offline_access',
    'profile',
    'fhirUser',
    'launch/patient',
    'patient/*.read',
    'user/*.read',
    'system/*.read',
    'system/*.write',
  ],
  pkce: { required: () => true },
  issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: true,
  ttl: {
    AccessToken: 3600,
    ClientCredentials: 600,
    AuthorizationCode: 60,
    Grant: 3600,
    Interaction: 600,
    RefreshToken: 86400,
    Session: 3600,
    ...(config.ttl ?? {}),
  },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  // oidc-provider refuses to fetch from special-use addresses (SSRF protection). The suite serves
  // a client's jwks_uri from 127.0.0.1, and nothing but loopback is reachable here, so requests to
  // 127.0.0.1 go out without its guarded dispatcher; any other host keeps the protection.
  fetch: (url, options) => {
    if (new URL(url).hostname === '127.0.0.1') {
      const { dispatcher: _guarded, ...rest } = options
      return globalThis.fetch(url, rest)
    }
    return globalThis.fetch(url, options)
  },
})

handler = provider.callback()

const discovery = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json()
process.stdout.write(
  `${JSON.stringify({
    server: 'oidc-provider',
    version,
    issuer,
    port,
    token_endpoint: discovery.token_endpoint,
    authorization_endpoint: discovery.authorization_endpoint,
    registration_endpoint: discovery.registration_endpoint,
    introspection_endpoint: discovery.introspection_endpoint,
    userinfo_endpoint: discovery.userinfo_endpoint,
    revocation_endpoint: discovery.revocation_endpoint,
  })}\n`,
)
