"""Who may call a node, and over what: TLS server credentials, authentication (hashed bearer tokens,
signed JWTs, client-certificate identities, the members' own probe token) and the role each RPC needs,
checked in one server interceptor. docs/security.md is the operator's side of this package.

- `authn`: who is calling. `Authenticator` turns a call's credentials into a `Principal` (`TokenStore`,
  the token file, re-read when it changes; `JwtVerifier`; client-certificate identities; `node_token`).
- `authz`: what they may do. `RPC_ROLES`, `Principal`, `current_principal`, and the namespace checks
  servicers make (`require_role`, `require_all_namespaces`, `readable`).
- `interceptor`: `AuthInterceptor`, which authenticates every call and checks its role before the
  servicer runs.
- `server`: `ServerSecurity`, what the node's gRPC server needs (credentials, interceptors, the probe's
  client side).
"""
